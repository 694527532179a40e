//! [`ObjectStore`] on the `objects` tree.
//!
//! Key layout (each component encoded by [`crate::keys`]; `org`, `type`, `field`, `key` are text,
//! `task` is 16 id bytes):
//!
//! | key | value | what |
//! | --- | --- | --- |
//! | `o` org type key | JSON [`StoredObject`] | the object (the `(org, type)` prefix lists a type in key order) |
//! | `i` org type field value key | empty | one entry per field of [`ObjectType::fields`], value as [`FieldValue::filter_text`](kat_core::object::FieldValue::filter_text), except the key-leading fields below |
//! | `a` org type key task | `u64` sequence | the tasks that wrote an object; the sequence (one per upsert) gives first-seen order |
//! | `t` org task sequence | JSON list of (type, key) | the objects one upsert attributed to a task for the first time |
//!
//! An index entry ends with the object key encoded exactly as in its `o` key, so a hit becomes a point
//! lookup without decoding.
//!
//! Key-leading fields (a hostname's or address's `network`, a port's `address`, a record's
//! `hostname`, a finding's `finding_type`, software's `name`, a network's `name`, a finding type's
//! `code`) are the first part of the natural key: the `o` prefix already orders objects by them, so
//! filtering on them scans that prefix and they get no `i` entries (fewer writes per object).
//!
//! The `t` lists are written once per upsert instead of once per object; reading them skips objects
//! that were deleted since (their `a` entry is gone).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use async_trait::async_trait;
use kat_core::clock::Timestamp;
use kat_core::levels::{self, Changes, NodeLevel};
use kat_core::memory::{expand_batch, in_request_order, merge_stored, replace_stored};
use kat_core::object::{NaturalKey, Object, ObjectType, ScanProfile, escape_part};
use kat_core::org::OrgCode;
use kat_core::store::{FindingRules, ObjectQuery, ObjectStore, Page, StoredObject};
use kat_core::task::{ObjectRef, TaskId};
use kat_core::{Error, Result};
use sled::IVec;

use crate::error::{SResult, SledStoreError};
use crate::keys::{EntriesUnder, Key, push_str_start, take_id, take_str, u64_value};
use crate::levels::SledGraph;
use crate::record::{INLINE_TASKS, Record};
use crate::{Inner, SledStore, from_json, to_json};

const T_OBJECT: u8 = b'o';
const T_INDEX: u8 = b'i';
const T_ATTR: u8 = b'a';
const T_BY_TASK: u8 = b't';

pub(crate) fn type_prefix(org: &OrgCode, ty: ObjectType) -> Key {
    Key::new(T_OBJECT).str(org.as_str()).str(ty.as_str())
}

pub(crate) fn object_key(org: &OrgCode, ty: ObjectType, key: &NaturalKey) -> Key {
    type_prefix(org, ty).str(key.as_str())
}

fn index_prefix(org: &OrgCode, ty: ObjectType, field: &str, value: &str) -> Key {
    index_field_prefix(org, ty, field).index_value(value)
}

/// What every index entry of `ty`'s `field` starts with.
fn index_field_prefix(org: &OrgCode, ty: ObjectType, field: &str) -> Key {
    Key::new(T_INDEX)
        .str(org.as_str())
        .str(ty.as_str())
        .str(field)
}

fn attr_prefix(org: &OrgCode, ty: ObjectType, key: &NaturalKey) -> Key {
    Key::new(T_ATTR)
        .str(org.as_str())
        .str(ty.as_str())
        .str(key.as_str())
}

fn by_task_prefix(org: &OrgCode, task: TaskId) -> Key {
    Key::new(T_BY_TASK).str(org.as_str()).id(task.0.as_bytes())
}

fn is_key_leading(ty: ObjectType, field: &str) -> bool {
    key_prefix(ty, field, "").is_some()
}

/// Whether `field` is the rest of `ty`'s natural key after its network (`network|value`: a hostname's
/// `name`, an address's `address`). A filter on it is answered by one point lookup per network the
/// type's objects are in (the networks are found by skipping through the key order, one seek each),
/// so these fields need no index entries either: a new hostname is one insert.
fn is_network_led(ty: ObjectType, field: &str) -> bool {
    matches!(
        (ty, field),
        (ObjectType::Hostname, "name")
            | (ObjectType::IpAddress, "address")
            | (ObjectType::Url, "url")
    )
}

/// Whether values of `field` get `i` index entries.
fn is_indexed(ty: ObjectType, field: &str) -> bool {
    !is_key_leading(ty, field) && !is_network_led(ty, field)
}

/// What a `t` entry lists.
#[derive(serde::Serialize, serde::Deserialize)]
struct Attributed(Vec<(ObjectType, NaturalKey)>);

/// For a key-leading field, the natural-key prefix that objects whose `field` is `value` have: their
/// key is that prefix or starts with it followed by `|`.
fn key_prefix<'v>(ty: ObjectType, field: &str, value: &'v str) -> Option<Cow<'v, str>> {
    use ObjectType as T;
    match (ty, field) {
        (T::Network, "name")
        | (T::FindingType, "code")
        | (T::Software, "name")
        | (T::Finding, "finding_type")
        | (T::Hostname, "network")
        | (T::IpAddress, "network")
        | (T::Url, "network") => Some(Cow::Owned(escape_part(value))),
        // These values are natural keys already (escaped parts joined by `|`).
        (T::IpPort, "address") => Some(Cow::Borrowed(value)),
        (t, "hostname") if t.is_dns_record() => Some(Cow::Borrowed(value)),
        _ => None,
    }
}

/// The index keys of a stored object.
fn index_keys(s: &StoredObject) -> Vec<Vec<u8>> {
    let ty = s.object_type();
    ty.fields()
        .iter()
        .filter(|f| is_indexed(ty, f))
        .filter_map(|f| {
            s.object.field(f).map(|v| {
                index_prefix(&s.org, ty, f, &v.filter_text())
                    .str(s.key.as_str())
                    .into_vec()
            })
        })
        .collect()
}

/// A natural key read back from the database, as it was written (it was valid then;
/// `NaturalKey::parse` is not used because it refuses keys longer than 4096 bytes that
/// `Object::natural_key` can produce).
pub(crate) fn stored_key(s: String) -> NaturalKey {
    NaturalKey::from_escaped_components([s])
}

/// The organization and natural key an `o` entry's key names.
fn pk_parts(pk: &[u8]) -> SResult<(OrgCode, NaturalKey)> {
    let malformed = || SledStoreError::decode("object key", "malformed");
    let (org, rest) = take_str(pk.get(1..).ok_or_else(malformed)?).ok_or_else(malformed)?;
    let (_ty, rest) = take_str(rest).ok_or_else(malformed)?;
    let (key, _) = take_str(rest).ok_or_else(malformed)?;
    let org = OrgCode::new(&org).map_err(|e| SledStoreError::decode("object key", e))?;
    Ok((org, stored_key(key)))
}

/// Decode the record stored under `pk`.
fn decode_at(pk: &[u8], v: &[u8]) -> SResult<Record> {
    let (org, key) = pk_parts(pk)?;
    Record::decode(&org, key, v)
}

fn load_record(inner: &Inner, pk: &[u8]) -> SResult<Option<Record>> {
    inner
        .objects
        .get(pk)?
        .map(|v| decode_at(pk, &v))
        .transpose()
}

fn load(inner: &Inner, pk: &[u8]) -> SResult<Option<StoredObject>> {
    Ok(load_record(inner, pk)?.map(|r| r.o))
}

/// Whether `task` wrote the object of `record` (stored under `org`, `ty`, `key`).
fn attributed(
    inner: &Inner,
    record: &Record,
    org: &OrgCode,
    ty: ObjectType,
    key: &NaturalKey,
    task: TaskId,
) -> SResult<bool> {
    if record.t.contains(&task) {
        return Ok(true);
    }
    if record.t.len() < INLINE_TASKS {
        return Ok(false);
    }
    Ok(inner
        .objects
        .contains_key(attr_prefix(org, ty, key).id(task.0.as_bytes()))?)
}

fn page<T>(items: Vec<T>, offset: usize, limit: usize) -> Vec<T> {
    let limit = if limit == 0 { usize::MAX } else { limit };
    items.into_iter().skip(offset).take(limit).collect()
}

/// One object of an upsert, read and merged, ready to be written.
struct Planned {
    pk: Key,
    ty: ObjectType,
    key: NaturalKey,
    /// The record to write.
    record: Record,
    /// Whether the object is new.
    created: bool,
    index_remove: Vec<Vec<u8>>,
    index_insert: Vec<Vec<u8>>,
    /// An `a` entry to write (the record's inline list is full).
    overflow: Option<Vec<u8>>,
    /// Whether the writing task is attributed to the object for the first time.
    first_seen: bool,
}

/// Read what is stored under `pk`, merge `o` into it (or, with `replace`, replace it: it must exist)
/// and encode the result. Only reads.
fn plan_one(
    inner: &Inner,
    org: &OrgCode,
    (pk, key, o): (Key, NaturalKey, Object),
    by: Option<TaskId>,
    now: Timestamp,
    replace: bool,
) -> SResult<Planned> {
    let ty = o.object_type();
    let found = inner.objects.get(pk.as_slice())?;
    let (existing, mut tasks) = match found
        .map(|v| Record::decode(org, key.clone(), &v))
        .transpose()?
    {
        Some(r) => (Some(r.o), r.t),
        None => (None, Vec::new()),
    };
    let created = existing.is_none();
    let last_writer = existing.as_ref().and_then(|s| s.last_seen_by);
    let old_index = existing.as_ref().map(index_keys).unwrap_or_default();
    let new = match existing {
        Some(s) if replace => replace_stored(s, o, by, now),
        None if replace => return Err(SledStoreError::ObjectNotFound(key.into_string())),
        existing => merge_stored(existing, org, key.clone(), o, by, now),
    };
    let new_index = index_keys(&new);
    let index_remove = old_index
        .iter()
        .filter(|k| !new_index.contains(k))
        .cloned()
        .collect();
    let index_insert = new_index
        .into_iter()
        .filter(|k| !old_index.contains(k))
        .collect();
    // The last writer is attributed already. Otherwise the record's own list says, and only when
    // that list is full does an `a` entry need a look.
    let mut overflow = None;
    let mut first_seen = false;
    if let Some(t) = by
        && last_writer != by
        && !tasks.contains(&t)
    {
        if tasks.len() < INLINE_TASKS {
            tasks.push(t);
            first_seen = true;
        } else {
            let ak = attr_prefix(org, ty, &key).id(t.0.as_bytes());
            if !inner.objects.contains_key(ak.as_slice())? {
                overflow = Some(ak.into_vec());
                first_seen = true;
            }
        }
    }
    Ok(Planned {
        record: Record { o: new, t: tasks },
        created,
        pk,
        ty,
        key,
        index_remove,
        index_insert,
        overflow,
        first_seen,
    })
}

/// Read the stored edges of every node a write creates, deletes or gives a new profile, in one
/// ordered pass: the level algorithm starts from each of them. Not those of the far ends of the
/// write's edges: the algorithm reads their edges only when their level changes, and a far end
/// such as a name server can have thousands.
fn prefetch_edges(graph: &mut SledGraph<'_>, changes: &Changes) -> SResult<()> {
    graph.prefetch(&changes.nodes)
}

/// Upsert `objects` in one atomic batch; with `replace`, the first requested object replaces its
/// stored version (which must exist, else nothing is written) instead of merging into it.
fn upsert_blocking(
    inner: &Inner,
    org: &OrgCode,
    objects: Vec<Object>,
    by: Option<TaskId>,
    replace: bool,
) -> SResult<Vec<StoredObject>> {
    use crate::work::Phase;
    let clock = &inner.upsert_clock;
    let lap = Instant::now();
    let expanded = expand_batch(objects);
    let target = replace
        .then(|| expanded.requested.first().copied())
        .flatten();
    let max = inner
        .max_batch_objects
        .load(std::sync::atomic::Ordering::Relaxed);
    if expanded.objects.len() > max {
        return Err(SledStoreError::BatchTooLarge {
            objects: expanded.objects.len(),
            max,
        });
    }
    let now = Timestamp::now();
    // In key order: neighbouring lookups then touch the same tree nodes. Each keeps its index in
    // `expanded.objects`, which `expanded.requested` refers to.
    let mut work: Vec<(usize, (Key, NaturalKey, Object))> = expanded
        .objects
        .into_iter()
        .map(|(key, o)| (object_key(org, o.object_type(), &key), key, o))
        .enumerate()
        .collect();
    work.sort_by(|a, b| a.1.0.as_slice().cmp(b.1.0.as_slice()));
    clock.lap(Phase::Expanding, lap);
    let _writer = inner.object_writer();
    // Waiting for the lock counts as neither phase.
    let mut lap = Instant::now();
    let seq = match by {
        Some(_) => inner.db.generate_id()?,
        None => 0,
    };
    let mut batch = sled::Batch::default();
    let mut stored: Vec<Option<StoredObject>> = vec![None; work.len()];
    let mut first_seen = Vec::new();
    let mut graph = SledGraph::new(inner, org);
    let mut changes = Changes::default();
    let planned_objects = work.len();
    let mut planned = Vec::with_capacity(work.len());
    // New objects with no level.
    let mut quiet = Vec::new();
    // One thread: reading on several was measured and made no difference (a read completes the node
    // splits the previous batch left, and that work serialises inside sled).
    for (i, w) in work {
        let p = plan_one(inner, org, w, by, now, target == Some(i))?;
        if p.created {
            let here = ObjectRef {
                object_type: p.ty,
                key: p.key.clone(),
            };
            let rels = levels::relations(&p.record.o.object);
            crate::levels::insert_edges(&mut batch, org, &here, &rels);
            for rel in rels {
                graph.overlay_added(&rel);
                changes.added.push(rel);
            }
            match p.record.o.scan {
                // No level: it changes no level unless an edge this write adds or a stored one
                // (left by a record naming it) reaches it; seen below.
                Some(scan) if !scan.declared && scan.level.is_none() => {
                    quiet.push(here);
                }
                Some(scan) => {
                    graph.overlay_node(
                        here.clone(),
                        Some(NodeLevel {
                            level: scan.level,
                            declared: scan.declared,
                            inherited_from: None,
                        }),
                    );
                    changes.nodes.push(here);
                }
                None => {}
            }
        }
        planned.push((i, p));
    }
    lap = clock.lap(Phase::Merging, lap);
    let levels_started = Instant::now();
    let touched: HashSet<&ObjectRef> = changes
        .added
        .iter()
        .flat_map(|e| [&e.source, &e.target])
        .collect();
    let (reached, maybe): (Vec<ObjectRef>, Vec<ObjectRef>) =
        quiet.into_iter().partition(|n| touched.contains(n));
    drop(touched);
    let mut linked = graph.with_stored_edges(maybe)?;
    linked.extend(reached);
    for here in linked {
        graph.overlay_node(here.clone(), Some(NodeLevel::default()));
        changes.nodes.push(here);
    }
    prefetch_edges(&mut graph, &changes)?;
    levels::update(&mut graph, &changes)?;
    let mut set = std::mem::take(&mut graph.set);
    drop(graph);
    let levels_time = levels_started.elapsed();
    for (i, mut p) in planned {
        for k in p.index_remove {
            batch.remove(k);
        }
        for k in p.index_insert {
            batch.insert(k, IVec::default());
        }
        if let Some(ak) = p.overflow {
            batch.insert(ak, &seq.to_be_bytes()[..]);
        }
        if p.record.o.scan.is_some()
            && let Some((level, from)) = set.remove(&ObjectRef {
                object_type: p.ty,
                key: p.key.clone(),
            })
        {
            crate::levels::apply(&mut p.record.o, level, from);
        }
        if p.first_seen {
            first_seen.push((p.ty, p.key));
        }
        batch.insert(p.pk.into_vec(), p.record.encode()?);
        stored[i] = Some(p.record.o);
    }
    let now = Instant::now();
    let levels_started = now.checked_sub(levels_time).unwrap_or(now);
    crate::levels::write_loaded(inner, org, set, &mut batch)?;
    if !changes.is_empty() {
        crate::levels::account(inner, levels_started);
    }
    if let Some(t) = by
        && !first_seen.is_empty()
    {
        batch.insert(
            by_task_prefix(org, t).u64(seq).into_vec(),
            to_json("task attribution", &Attributed(first_seen))?,
        );
    }
    lap = clock.lap(Phase::Preparing, lap);
    inner.objects.apply_batch(batch)?;
    clock.lap(Phase::Applying, lap);
    clock.count(planned_objects);
    drop(_writer);
    in_request_order(&expanded.requested, stored).map_err(|i| {
        SledStoreError::Worker(format!("upserted object number {i} went missing").into())
    })
}

/// Whether any entry's key starts with `prefix` (one seek).
fn any_under(tree: &sled::Tree, prefix: &[u8]) -> SResult<bool> {
    match tree.range(prefix..).next() {
        Some(Ok((k, _))) => Ok(k.starts_with(prefix)),
        Some(Err(e)) => Err(e.into()),
        None => Ok(false),
    }
}

/// The objects whose `field` may be one of `values`, as encoded key tails (what follows the type
/// prefix in an `o` key), from the field's index or, for a key-leading field, the `o` prefix.
fn candidates(
    inner: &Inner,
    org: &OrgCode,
    ty: ObjectType,
    field: &str,
    values: &[String],
) -> Box<dyn Iterator<Item = SResult<Vec<u8>>>> {
    let tree = inner.objects.clone();
    if is_network_led(ty, field) {
        let networks = match leading_parts(&tree, type_prefix(org, ty).as_slice()) {
            Ok(n) => n,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let values: Vec<String> = values.iter().map(|v| escape_part(v)).collect();
        return Box::new(networks.into_iter().flat_map(move |n| {
            values
                .iter()
                .map(|v| Ok(Key::new(0).str(&format!("{n}|{v}")).into_vec()[1..].to_vec()))
                .collect::<Vec<_>>()
        }));
    }
    // Each value's entries in key order (EntriesUnder): values that match nothing, between two
    // stored keys, cost one seek together.
    if is_key_leading(ty, field) {
        let types = type_prefix(org, ty).into_vec();
        let type_len = types.len();
        // Each value's scan prefix in one allocation, beside the length of its key part.
        let mut scans: Vec<(Vec<u8>, usize)> = values
            .iter()
            .filter_map(|v| key_prefix(ty, field, v))
            .map(|p| {
                let mut scan = Vec::with_capacity(type_len + p.len() + 2);
                scan.extend_from_slice(&types);
                push_str_start(&mut scan, p.as_bytes());
                (scan, p.len())
            })
            .collect();
        scans.sort_unstable();
        let (scans, lens): (Vec<Vec<u8>>, Vec<usize>) = scans.into_iter().unzip();
        Box::new(EntriesUnder::new(tree, scans).filter_map(move |e| {
            let (i, k, _) = match e {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e)),
            };
            let len = *lens.get(i)?;
            let tail = &k[type_len..];
            let key = take_str(tail)?.0;
            let whole_part = key.len() == len || key[len..].starts_with('|');
            whole_part.then(|| Ok(tail.to_vec()))
        }))
    } else {
        let fields = index_field_prefix(org, ty, field);
        let mut prefixes: Vec<Vec<u8>> = values
            .iter()
            .map(|v| fields.clone().index_value(v).into_vec())
            .collect();
        prefixes.sort();
        let lens: Vec<usize> = prefixes.iter().map(Vec::len).collect();
        Box::new(EntriesUnder::new(tree, prefixes).map(move |e| {
            let (i, k, _) = e?;
            Ok(k[lens.get(i).copied().unwrap_or(k.len())..].to_vec())
        }))
    }
}

/// The distinct first parts (escaped, as in the keys) of the natural keys stored under `prefix`, by
/// skipping: after the first key with first part `p`, the next seek starts at `p}`, past every key
/// that is `p` or starts with `p|` (`}` follows `|`, and parts never hold an unescaped `|`). One seek
/// per distinct part, however many objects share it.
fn leading_parts(tree: &sled::Tree, prefix: &[u8]) -> SResult<Vec<String>> {
    let mut parts = Vec::new();
    let mut from = prefix.to_vec();
    while let Some(entry) = tree.range(from.as_slice()..).next() {
        let (k, _) = entry?;
        if !k.starts_with(prefix) {
            break;
        }
        let (key, _) = take_str(&k[prefix.len()..])
            .ok_or_else(|| SledStoreError::decode("object key", "malformed"))?;
        let first = key.split('|').next().unwrap_or_default().to_string();
        from = prefix.to_vec();
        from.extend_from_slice(&Key::new(0).str_start(&format!("{first}}}")).as_slice()[1..]);
        parts.push(first);
    }
    Ok(parts)
}

/// Of the query's filters, the one with the fewest candidates: every filter's candidates are walked
/// in turn, one step each, until one runs out, so the cost is (filters × the smallest count).
fn most_selective(
    inner: &Inner,
    q: &ObjectQuery,
    filters: &[&(String, Vec<String>)],
) -> SResult<usize> {
    if filters.len() < 2 {
        return Ok(0);
    }
    let mut iters: Vec<_> = filters
        .iter()
        .map(|(f, values)| candidates(inner, &q.org, q.object_type, f, values))
        .collect();
    loop {
        for (i, it) in iters.iter_mut().enumerate() {
            match it.next() {
                None => return Ok(i),
                Some(Err(e)) => return Err(e),
                Some(Ok(_)) => {}
            }
        }
    }
}

/// The keys of a query's matches. A scan of the whole type in key order, filtered at most by scan
/// level (an object set of every object of a type), reads the key from the entry's key and the
/// scan level from the record's header, never decoding an object; anything else is
/// [`query_blocking`]'s page.
fn query_keys_blocking(inner: &Inner, q: &ObjectQuery) -> SResult<Vec<NaturalKey>> {
    let plain = q.keys.is_none()
        && q.filters.is_empty()
        && q.search.is_none()
        && q.offset == 0
        && q.ordering
            .as_ref()
            .is_none_or(|o| o.field == "id" && !o.descending);
    if !plain {
        return Ok(query_blocking(inner, q)?
            .items
            .into_iter()
            .map(|o| o.key)
            .collect());
    }
    let prefix = type_prefix(&q.org, q.object_type).into_vec();
    let limit = if q.limit == 0 { usize::MAX } else { q.limit };
    let mut out = Vec::new();
    for entry in inner.objects.scan_prefix(&prefix) {
        if out.len() >= limit {
            break;
        }
        let (k, v) = entry?;
        if let Some(min) = q.min_scan_level {
            let scan = match crate::record::scan_of(&v)? {
                Some(scan) => scan,
                None => decode_at(&k, &v)?.o.scan,
            };
            if !scan.is_some_and(|p| p.allows(min)) {
                continue;
            }
        }
        let (key, _) = take_str(&k[prefix.len()..])
            .ok_or_else(|| SledStoreError::decode("object key", "malformed"))?;
        out.push(stored_key(key));
    }
    Ok(out)
}

fn query_blocking(inner: &Inner, q: &ObjectQuery) -> SResult<Page<StoredObject>> {
    let prefix = type_prefix(&q.org, q.object_type).into_vec();
    // Filters on the object's own fields have candidates (an index or the key order); the level
    // filters (`scan_level`, `declared`) are checked on each decoded object.
    let own = q.object_type.fields();
    let indexable: Vec<&(String, Vec<String>)> = q
        .filters
        .iter()
        .filter(|(f, _)| own.contains(&f.as_str()))
        .collect();
    // Candidates from point lookups: a key restriction, or the most selective filter's index.
    let candidates: Option<BTreeSet<Vec<u8>>> = if let Some(keys) = &q.keys {
        Some(
            keys.iter()
                .map(|k| Key::new(0).str(k.as_str()).into_vec()[1..].to_vec())
                .collect(),
        )
    } else if !indexable.is_empty() {
        let i = most_selective(inner, q, &indexable)?;
        let (field, values) = indexable[i];
        Some(candidates(inner, &q.org, q.object_type, field, values).collect::<SResult<_>>()?)
    } else {
        None
    };
    if let Some(tails) = candidates {
        let mut items = Vec::new();
        for tail in tails {
            let mut pk = prefix.clone();
            pk.extend_from_slice(&tail);
            if let Some(s) = load(inner, &pk)?
                && q.matches(&s)
            {
                items.push(s);
            }
        }
        q.sort(&mut items);
        return Ok(Page {
            count: items.len() as u64,
            items: page(items, q.offset, q.limit),
        });
    }
    // A scan of the type: in key order it streams, decoding only what the page and the checks need.
    let key_order = q.ordering.as_ref().is_none_or(|o| o.field == "id");
    let search = q.search.as_ref().map(|s| s.to_lowercase());
    if key_order {
        let descending = q.ordering.as_ref().is_some_and(|o| o.descending);
        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
        let iter = inner.objects.scan_prefix(&prefix);
        let iter: Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>>> = if descending {
            Box::new(iter.rev())
        } else {
            Box::new(iter)
        };
        let mut count = 0u64;
        let mut items = Vec::new();
        for entry in iter {
            let (k, v) = entry?;
            if let Some(s) = &search {
                let (key, _) = take_str(&k[prefix.len()..])
                    .ok_or_else(|| SledStoreError::decode("object key", "malformed"))?;
                if !key.to_lowercase().contains(s.as_str()) {
                    continue;
                }
            }
            let in_page = count >= q.offset as u64 && items.len() < limit;
            if q.min_scan_level.is_some() || !q.filters.is_empty() {
                let s = decode_at(&k, &v)?.o;
                if !q.matches(&s) {
                    continue;
                }
                if in_page {
                    items.push(s);
                }
            } else if in_page {
                items.push(decode_at(&k, &v)?.o);
            }
            count += 1;
        }
        return Ok(Page { count, items });
    }
    let mut items = Vec::new();
    for entry in inner.objects.scan_prefix(&prefix) {
        let (k, v) = entry?;
        let s = decode_at(&k, &v)?.o;
        if q.matches(&s) {
            items.push(s);
        }
    }
    q.sort(&mut items);
    Ok(Page {
        count: items.len() as u64,
        items: page(items, q.offset, q.limit),
    })
}

/// [`ObjectStore::count_matching`]: for each value, the candidates of the field's index or key
/// order, each checked against the filter, until `at_most` match.
fn count_blocking(
    inner: &Inner,
    org: &OrgCode,
    ty: ObjectType,
    field: &str,
    values: &[String],
    at_most: usize,
) -> SResult<Vec<usize>> {
    let prefix = type_prefix(org, ty).into_vec();
    // One seek: with no object of the type, every count is 0.
    if !any_under(&inner.objects, &prefix)? {
        return Ok(vec![0; values.len()]);
    }
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        let mut q = ObjectQuery::new(org.clone(), ty);
        q.filters.push((field.to_string(), vec![v.clone()]));
        let mut n = 0;
        for tail in candidates(inner, org, ty, field, std::slice::from_ref(v)) {
            if n >= at_most {
                break;
            }
            let mut pk = prefix.clone();
            pk.extend_from_slice(&tail?);
            if let Some(s) = load(inner, &pk)?
                && q.matches(&s)
            {
                n += 1;
            }
        }
        out.push(n);
    }
    Ok(out)
}

/// The parts of a finding's JSON [`ObjectStore::finding_rules`] reads; serde skips the rest.
#[derive(serde::Deserialize)]
enum FindingPart {
    Finding {
        #[serde(default)]
        source_rules: Vec<String>,
        #[serde(default)]
        rule_only: bool,
    },
}

/// [`ObjectStore::finding_rules`]: a scan of each finding type's part of the key order, reading
/// each record's rules' part alone.
fn finding_rules_blocking(
    inner: &Inner,
    org: &OrgCode,
    codes: &[String],
) -> SResult<Vec<FindingRules>> {
    let ty = ObjectType::Finding;
    let prefix = type_prefix(org, ty).into_vec();
    let mut out = Vec::new();
    for code in codes {
        let p = escape_part(code);
        let scan = type_prefix(org, ty).str_start(&p).into_vec();
        for entry in inner.objects.scan_prefix(scan) {
            let (k, v) = entry?;
            let (key, _) = take_str(&k[prefix.len()..])
                .ok_or_else(|| SledStoreError::decode("object key", "malformed"))?;
            if !(key.len() == p.len() || key[p.len()..].starts_with('|')) {
                continue;
            }
            let (source_rules, rule_only) = match crate::record::object_json(&v)? {
                Some(json) => {
                    let FindingPart::Finding {
                        source_rules,
                        rule_only,
                    } = from_json("finding", json)?;
                    (source_rules, rule_only)
                }
                None => match decode_at(&k, &v)?.o.object {
                    Object::Finding(f) => (f.source_rules, f.rule_only),
                    _ => continue,
                },
            };
            out.push(FindingRules {
                key: stored_key(key),
                source_rules,
                rule_only,
            });
        }
    }
    Ok(out)
}

fn delete_blocking(
    inner: &Inner,
    org: &OrgCode,
    ty: ObjectType,
    keys: &[NaturalKey],
) -> SResult<u64> {
    let keys: BTreeSet<&NaturalKey> = keys.iter().collect();
    let _writer = inner.object_writer();
    let mut batch = sled::Batch::default();
    let mut n = 0;
    let mut graph = SledGraph::new(inner, org);
    let mut changes = Changes::default();
    for key in keys {
        let pk = object_key(org, ty, key);
        let Some(s) = load(inner, pk.as_slice())? else {
            continue;
        };
        n += 1;
        let here = ObjectRef {
            object_type: ty,
            key: key.clone(),
        };
        let rels = levels::relations(&s.object);
        crate::levels::remove_edges(&mut batch, org, &here, &rels);
        for rel in rels {
            graph.overlay_removed(&here, &rel);
            changes.removed.push(rel);
        }
        if ty.has_scan_level() {
            graph.overlay_node(here.clone(), None);
            changes.nodes.push(here);
        }
        batch.remove(pk.into_vec());
        for k in index_keys(&s) {
            batch.remove(k);
        }
        // The tasks' `t` lists keep naming it; readers skip objects without an `a` entry.
        for entry in inner.objects.scan_prefix(attr_prefix(org, ty, key)) {
            batch.remove(entry?.0);
        }
    }
    if n > 0 {
        let levels_started = Instant::now();
        prefetch_edges(&mut graph, &changes)?;
        levels::update(&mut graph, &changes)?;
        let set = std::mem::take(&mut graph.set);
        drop(graph);
        crate::levels::write_loaded(inner, org, set, &mut batch)?;
        if !changes.is_empty() {
            crate::levels::account(inner, levels_started);
        }
        inner.objects.apply_batch(batch)?;
    }
    Ok(n)
}

/// Set a scan profile (declared, or back to inherited) and the levels that follow, in one batch.
fn set_profile_blocking(
    inner: &Inner,
    org: &OrgCode,
    ty: ObjectType,
    key: &NaturalKey,
    profile: ScanProfile,
) -> SResult<Option<StoredObject>> {
    let pk = object_key(org, ty, key).into_vec();
    let _writer = inner.object_writer();
    let Some(mut r) = load_record(inner, &pk)? else {
        return Ok(None);
    };
    r.o.scan = Some(if profile.declared {
        profile
    } else {
        ScanProfile::default()
    });
    r.o.inherited_from = None;
    let here = ObjectRef {
        object_type: ty,
        key: key.clone(),
    };
    let mut graph = SledGraph::new(inner, org);
    graph.overlay_node(
        here.clone(),
        r.o.scan.map(|p| NodeLevel {
            level: p.level,
            declared: p.declared,
            inherited_from: None,
        }),
    );
    levels::update(
        &mut graph,
        &Changes {
            nodes: vec![here.clone()],
            ..Changes::default()
        },
    )?;
    let mut set = std::mem::take(&mut graph.set);
    drop(graph);
    if let Some((level, from)) = set.remove(&here) {
        crate::levels::apply(&mut r.o, level, from);
    }
    let mut batch = sled::Batch::default();
    batch.insert(pk, r.encode()?);
    crate::levels::write_loaded(inner, org, set, &mut batch)?;
    inner.objects.apply_batch(batch)?;
    Ok(Some(r.o))
}

impl SledStore {
    /// After an upsert: [`SledStore::written`], timed as its flushing when there is one.
    async fn upserted(&self) -> SResult<()> {
        if self.inner.durability == crate::Durability::FlushEachWrite {
            let flushing = Instant::now();
            self.written().await?;
            self.inner
                .upsert_clock
                .lap(crate::work::Phase::Flushing, flushing);
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for SledStore {
    async fn upsert(
        &self,
        org: &OrgCode,
        objects: Vec<Object>,
        by: Option<TaskId>,
    ) -> Result<Vec<StoredObject>> {
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let org = org.clone();
        let out = self
            .blocking(move |inner| upsert_blocking(inner, &org, objects, by, false))
            .await?;
        self.upserted().await?;
        Ok(out)
    }

    async fn replace(
        &self,
        org: &OrgCode,
        object: Object,
        by: Option<TaskId>,
    ) -> Result<StoredObject> {
        let org = org.clone();
        let mut out = self
            .blocking(move |inner| upsert_blocking(inner, &org, vec![object], by, true))
            .await?;
        self.upserted().await?;
        Ok(out
            .pop()
            .ok_or_else(|| SledStoreError::Worker("a replace returned nothing".into()))?)
    }

    async fn get(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
    ) -> Result<Option<StoredObject>> {
        // On the calling thread: a point read of a cached page takes a few microseconds, less than
        // the hop to the blocking pool and back (docs/store-sled.md).
        let pk = object_key(org, ty, key).into_vec();
        Ok(load(&self.inner, &pk)?)
    }

    async fn query_valid(&self, query: &ObjectQuery) -> Result<Page<StoredObject>> {
        // On the calling thread, as `get`: when the organization has no object of the type (the
        // DNS records of a write's new hostnames, which its answer looks up, say), one seek
        // answers, without copying the query to the blocking pool and back. Like `get`, the seek
        // waits while another write's `apply_batch` holds sled's process-wide lock.
        let prefix = type_prefix(&query.org, query.object_type);
        if !any_under(&self.inner.objects, prefix.as_slice())? {
            return Ok(Page {
                count: 0,
                items: Vec::new(),
            });
        }
        let q = query.clone();
        Ok(self
            .blocking(move |inner| query_blocking(inner, &q))
            .await?)
    }

    async fn query_keys_valid(&self, query: &ObjectQuery) -> Result<Vec<NaturalKey>> {
        let q = query.clone();
        Ok(self
            .blocking(move |inner| query_keys_blocking(inner, &q))
            .await?)
    }

    async fn count_matching(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        field: &str,
        values: &[String],
        at_most: usize,
    ) -> Result<Vec<usize>> {
        if !ty.fields().contains(&field) {
            return Err(Error::invalid(
                "filter",
                format!("{ty} has no field {field:?}"),
            ));
        }
        let (org, field, values) = (org.clone(), field.to_string(), values.to_vec());
        Ok(self
            .blocking(move |inner| count_blocking(inner, &org, ty, &field, &values, at_most))
            .await?)
    }

    async fn finding_rules(
        &self,
        org: &OrgCode,
        finding_types: &[String],
    ) -> Result<Vec<FindingRules>> {
        let (org, codes) = (org.clone(), finding_types.to_vec());
        Ok(self
            .blocking(move |inner| finding_rules_blocking(inner, &org, &codes))
            .await?)
    }

    async fn delete(&self, org: &OrgCode, ty: ObjectType, keys: &[NaturalKey]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let org = org.clone();
        let keys = keys.to_vec();
        let n = self
            .blocking(move |inner| delete_blocking(inner, &org, ty, &keys))
            .await?;
        if n > 0 {
            self.written().await?;
        }
        Ok(n)
    }

    async fn set_scan_profile_valid(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
        profile: ScanProfile,
    ) -> Result<StoredObject> {
        let (org2, key2) = (org.clone(), key.clone());
        let s = self
            .blocking(move |inner| set_profile_blocking(inner, &org2, ty, &key2, profile))
            .await?
            .ok_or_else(|| Error::not_found("object", key.as_str()))?;
        self.written().await?;
        Ok(s)
    }

    async fn tasks_of(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        key: &NaturalKey,
    ) -> Result<Vec<TaskId>> {
        let ap = attr_prefix(org, ty, key).into_vec();
        let pk = object_key(org, ty, key).into_vec();
        Ok(self
            .blocking(move |inner| {
                let Some(record) = load_record(inner, &pk)? else {
                    return Ok(Vec::new());
                };
                let mut seen = Vec::new();
                for entry in inner.objects.scan_prefix(&ap) {
                    let (k, v) = entry?;
                    let (task, _) = take_id(&k[ap.len()..])
                        .ok_or_else(|| SledStoreError::decode("attribution key", "malformed"))?;
                    let seq = u64_value(&v)
                        .ok_or_else(|| SledStoreError::decode("attribution", "not a sequence"))?;
                    seen.push((seq, TaskId(uuid::Uuid::from_bytes(task))));
                }
                seen.sort();
                let mut out = record.t;
                out.extend(seen.into_iter().map(|(_, t)| t));
                Ok(out)
            })
            .await?)
    }

    async fn objects_of(&self, org: &OrgCode, task: TaskId) -> Result<Vec<ObjectRef>> {
        let org = org.clone();
        Ok(self
            .blocking(move |inner| {
                let mut out = BTreeSet::new();
                for entry in inner.objects.scan_prefix(by_task_prefix(&org, task)) {
                    let (_, v) = entry?;
                    let Attributed(list) = from_json("task attribution", &v)?;
                    for (object_type, key) in list {
                        // Skip objects deleted since (and not written by this task again).
                        let pk = object_key(&org, object_type, &key);
                        if let Some(r) = load_record(inner, pk.as_slice())?
                            && attributed(inner, &r, &org, object_type, &key, task)?
                        {
                            out.insert(ObjectRef { object_type, key });
                        }
                    }
                }
                Ok(out.into_iter().collect())
            })
            .await?)
    }

    async fn recompute_levels(&self, org: Option<&OrgCode>) -> Result<u64> {
        let org = org.cloned();
        let n = self
            .blocking(move |inner| crate::levels::recompute_blocking(inner, org.as_ref()))
            .await?;
        self.written().await?;
        Ok(n)
    }

    async fn levels_need_recompute(&self) -> Result<bool> {
        Ok(self.blocking(crate::levels::needs_recompute).await?)
    }

    fn change_mark(&self, _org: &OrgCode) -> Option<u64> {
        // Store-wide: the database is this process's, and every object write of any organization
        // holds the one object writer lock and counts when it lets go.
        Some(
            self.inner
                .object_writes
                .load(std::sync::atomic::Ordering::Acquire),
        )
    }
}

/// Bring the `objects` tree from format version 1 to 2: records become the compact encoding and the
/// `i` entries of network-led fields (answered from the key order since version 2) go. Idempotent (a
/// crash half-way leaves records of both encodings, which both decode, and the next open finishes
/// it); written in batches of [`MIGRATION_BATCH`]. Returns how many entries changed.
pub(crate) fn migrate_v1(tree: &sled::Tree) -> SResult<u64> {
    let mut changed = 0u64;
    let mut batch = sled::Batch::default();
    let mut pending = 0usize;
    let mut flush = |batch: &mut sled::Batch, pending: &mut usize| -> SResult<()> {
        if *pending > 0 {
            tree.apply_batch(std::mem::take(batch))?;
            changed += *pending as u64;
            *pending = 0;
        }
        Ok(())
    };
    for entry in tree.scan_prefix([T_OBJECT]) {
        let (k, v) = entry?;
        if v.first() == Some(&b'{') {
            batch.insert(k.to_vec(), decode_at(&k, &v)?.encode()?);
            pending += 1;
        }
        if pending >= MIGRATION_BATCH {
            flush(&mut batch, &mut pending)?;
        }
    }
    for entry in tree.scan_prefix([T_INDEX]) {
        let (k, _) = entry?;
        let parsed = (|| {
            let (_org, rest) = take_str(&k[1..])?;
            let (ty, rest) = take_str(rest)?;
            let (field, _) = take_str(rest)?;
            Some((ty.parse::<ObjectType>().ok()?, field))
        })();
        if let Some((ty, field)) = parsed
            && is_network_led(ty, &field)
        {
            batch.remove(k);
            pending += 1;
        }
        if pending >= MIGRATION_BATCH {
            flush(&mut batch, &mut pending)?;
        }
    }
    flush(&mut batch, &mut pending)?;
    Ok(changed)
}

/// Entries rewritten per batch by [`migrate_v1`].
pub(crate) const MIGRATION_BATCH: usize = 1_000;

/// What [`SledStore::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Stored objects.
    pub objects: u64,
    /// Field index entries.
    pub index_entries: u64,
    /// Attribution entries (object, task) pairs.
    pub attributions: u64,
    /// Edges of DNS records found with both their entries (or missing them, as problems).
    pub edges: u64,
    /// Stored files.
    pub files: u64,
    /// Stored tasks (their queued and running indexes are checked).
    pub tasks: u64,
    /// Inconsistencies found (at most [`VerifyReport::MAX_PROBLEMS`] are listed).
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// How many problems are listed at most.
    pub const MAX_PROBLEMS: usize = 100;

    /// Whether nothing is wrong.
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }

    pub(crate) fn problem(&mut self, p: String) {
        if self.problems.len() < Self::MAX_PROBLEMS {
            self.problems.push(p);
        }
    }
}

fn verify_objects(inner: &Inner, r: &mut VerifyReport) -> SResult<()> {
    let show = |k: &[u8]| String::from_utf8_lossy(k).replace('\0', "/");
    // Every `a` entry must name a stored object and appear in one of its task's `t` lists.
    let mut listed: BTreeSet<(String, [u8; 16], ObjectType, NaturalKey)> = BTreeSet::new();
    for entry in inner.objects.scan_prefix([T_BY_TASK]) {
        let (k, v) = entry?;
        let parsed = (|| {
            let (org, rest) = take_str(&k[1..])?;
            let (task, rest) = take_id(rest)?;
            (rest.len() == 8).then_some((org, task))
        })();
        let Some((org, task)) = parsed else {
            r.problem(format!("malformed task attribution key {}", show(&k)));
            continue;
        };
        match from_json::<Attributed>("task attribution", &v) {
            Ok(Attributed(list)) => {
                for (ty, key) in list {
                    listed.insert((org.clone(), task, ty, key));
                }
            }
            Err(e) => r.problem(format!("task attribution {}: {e}", show(&k))),
        }
    }
    for entry in inner.objects.scan_prefix([T_OBJECT]) {
        let (k, v) = entry?;
        r.objects += 1;
        let (s, inline) = match decode_at(&k, &v) {
            Ok(rec) => (rec.o, rec.t),
            Err(e) => {
                r.problem(format!("object {}: {e}", show(&k)));
                continue;
            }
        };
        r.attributions += inline.len() as u64;
        if inline.len() > INLINE_TASKS {
            r.problem(format!("object {} lists too many tasks", s.key));
        }
        for t in inline {
            let entry = (
                s.org.as_str().to_string(),
                *t.0.as_bytes(),
                s.object_type(),
                s.key.clone(),
            );
            if !listed.contains(&entry) {
                r.problem(format!(
                    "object {} names task {t} but is in none of its lists",
                    s.key
                ));
            }
        }
        if object_key(&s.org, s.object_type(), &s.key).as_slice() != &k[..] {
            r.problem(format!("object {} is stored under another key", show(&k)));
        }
        for ik in index_keys(&s) {
            if !inner.objects.contains_key(&ik)? {
                r.problem(format!("object {} lacks index entry {}", s.key, show(&ik)));
            }
        }
        let here = ObjectRef {
            object_type: s.object_type(),
            key: s.key.clone(),
        };
        for rel in levels::relations(&s.object) {
            r.edges += 1;
            if !crate::levels::has_edge(inner, &s.org, &here, &rel)? {
                r.problem(format!("record {} lacks its edge entries", s.key));
            }
        }
    }
    for entry in inner.objects.scan_prefix([T_INDEX]) {
        let (k, _) = entry?;
        r.index_entries += 1;
        let parsed = (|| {
            let (org, rest) = take_str(&k[1..])?;
            let (ty, rest) = take_str(rest)?;
            let (_field, rest) = take_str(rest)?;
            let rest = match rest.first()? {
                1 => take_str(&rest[1..])?.1,
                2 => rest.get(17..)?,
                _ => return None,
            };
            let (key, tail) = take_str(rest)?;
            tail.is_empty().then_some((org, ty, key))
        })();
        let Some((org, ty, key)) = parsed else {
            r.problem(format!("malformed index entry {}", show(&k)));
            continue;
        };
        let pk = Key::new(T_OBJECT).str(&org).str(&ty).str(&key).into_vec();
        match load(inner, &pk)? {
            Some(s) if index_keys(&s).iter().any(|ik| ik[..] == k[..]) => {}
            Some(_) => r.problem(format!("stale index entry {}", show(&k))),
            None => r.problem(format!("index entry {} names no object", show(&k))),
        }
    }
    for entry in inner.objects.scan_prefix([T_ATTR]) {
        let (k, _) = entry?;
        r.attributions += 1;
        let parsed = (|| {
            let (org, rest) = take_str(&k[1..])?;
            let (ty, rest) = take_str(rest)?;
            let (key, rest) = take_str(rest)?;
            let (task, tail) = take_id(rest)?;
            tail.is_empty().then_some((org, ty, key, task))
        })();
        let Some((org, ty, key, task)) = parsed else {
            r.problem(format!("malformed attribution {}", show(&k)));
            continue;
        };
        let pk = Key::new(T_OBJECT).str(&org).str(&ty).str(&key).into_vec();
        match inner
            .objects
            .get(&pk)?
            .map(|v| decode_at(&pk, &v))
            .transpose()
        {
            Ok(Some(rec))
                if rec.t.len() == INLINE_TASKS
                    && !rec.t.iter().any(|t| t.0.as_bytes() == &task) => {}
            Ok(Some(_)) => r.problem(format!(
                "attribution {} overflows a list that is not full or repeats it",
                show(&k)
            )),
            Ok(None) => r.problem(format!("attribution {} names no object", show(&k))),
            Err(e) => r.problem(format!("attribution {}: {e}", show(&k))),
        }
        let in_list = match ty.parse::<ObjectType>() {
            Ok(t) => listed.contains(&(org, task, t, stored_key(key))),
            Err(_) => false,
        };
        if !in_list {
            r.problem(format!("attribution {} is in no task list", show(&k)));
        }
    }
    Ok(())
}

impl SledStore {
    /// Check that indexes and attribution agree with the stored objects and that every file's
    /// contents are there: a full scan, for tests and for an operator after an incident.
    ///
    /// # Errors
    /// `Error::Io` or `Error::Corrupt` when the database cannot be read.
    pub async fn verify(&self) -> Result<VerifyReport> {
        Ok(self
            .blocking(|inner| {
                let mut r = VerifyReport::default();
                verify_objects(inner, &mut r)?;
                crate::files::verify_files(inner, &mut r)?;
                crate::tasks::verify_task_states(inner, &mut r)?;
                Ok(r)
            })
            .await?)
    }
}
