//! Scan levels on sled: the relations of DNS records in their own keyspace of the `objects` tree, the
//! level graph kat-core's algorithm runs on ([`kat_core::levels`]), and the full recomputation.
//!
//! | key | value | what |
//! | --- | --- | --- |
//! | `e` org source-type source-key target-type target-key record-type record-key | cap | an edge, by its source |
//! | `r` org target-type target-key source-type source-key record-type record-key | cap | the same edge, by its target |
//! | `L` `recompute` | empty | the levels need a full recomputation (set by a migration) |
//!
//! The cap is one byte, `0xFF` for none. An edge is written in the same atomic batch as the record
//! that creates it, and the levels it changes are written in that batch too, so the graph, the
//! records and the levels never disagree after a crash. A full recomputation reads the edges and
//! the level bytes of the records' headers, never their JSON.

use std::collections::{BTreeMap, HashMap, HashSet};

use kat_core::levels::{self, LevelGraph, NodeLevel, Relation};
use kat_core::object::{NaturalKey, ObjectType, ScanLevel, ScanProfile};
use kat_core::org::OrgCode;
use kat_core::store::StoredObject;
use kat_core::task::ObjectRef;

use crate::Inner;
use crate::error::{SResult, SledStoreError};
use crate::keys::{Key, take_str};
use crate::objects::{object_key, stored_key, type_prefix};
use crate::record::{Record, node_level};
use sled::IVec;

const T_OUT: u8 = b'e';
const T_IN: u8 = b'r';
const T_MARK: u8 = b'L';
const NO_CAP: u8 = 0xFF;

/// Level changes written per batch by a full recomputation.
const RECOMPUTE_BATCH: usize = 10_000;

/// The "levels need a full recomputation" marker's key.
pub(crate) fn marker_key() -> Vec<u8> {
    Key::new(T_MARK).str("recompute").into_vec()
}

fn cap_byte(cap: Option<ScanLevel>) -> u8 {
    cap.map_or(NO_CAP, ScanLevel::get)
}

fn node_prefix(tag: u8, org: &OrgCode, n: &ObjectRef) -> Key {
    Key::new(tag)
        .str(org.as_str())
        .str(n.object_type.as_str())
        .str(n.key.as_str())
}

fn out_key(org: &OrgCode, record: &ObjectRef, rel: &Relation) -> Vec<u8> {
    node_prefix(T_OUT, org, &rel.source)
        .str(rel.target.object_type.as_str())
        .str(rel.target.key.as_str())
        .str(record.object_type.as_str())
        .str(record.key.as_str())
        .into_vec()
}

fn in_key(org: &OrgCode, record: &ObjectRef, rel: &Relation) -> Vec<u8> {
    node_prefix(T_IN, org, &rel.target)
        .str(rel.source.object_type.as_str())
        .str(rel.source.key.as_str())
        .str(record.object_type.as_str())
        .str(record.key.as_str())
        .into_vec()
}

/// Add the entries of `record`'s edges to `batch`.
pub(crate) fn insert_edges(
    batch: &mut sled::Batch,
    org: &OrgCode,
    record: &ObjectRef,
    rels: &[Relation],
) {
    for rel in rels {
        let cap = [cap_byte(rel.cap)];
        batch.insert(out_key(org, record, rel), &cap[..]);
        batch.insert(in_key(org, record, rel), &cap[..]);
    }
}

/// Remove the entries of `record`'s edges in `batch`.
pub(crate) fn remove_edges(
    batch: &mut sled::Batch,
    org: &OrgCode,
    record: &ObjectRef,
    rels: &[Relation],
) {
    for rel in rels {
        batch.remove(out_key(org, record, rel));
        batch.remove(in_key(org, record, rel));
    }
}

/// Whether both entries of an edge are stored (for `verify`).
pub(crate) fn has_edge(
    inner: &Inner,
    org: &OrgCode,
    record: &ObjectRef,
    rel: &Relation,
) -> SResult<bool> {
    Ok(inner.objects.contains_key(out_key(org, record, rel))?
        && inner.objects.contains_key(in_key(org, record, rel))?)
}

fn obj_ref(ty: &str, key: String) -> Option<ObjectRef> {
    Some(ObjectRef {
        object_type: ty.parse().ok()?,
        key: stored_key(key),
    })
}

/// One edge entry after its node prefix: the other node, the record, the cap.
fn parse_edge(rest: &[u8], value: &[u8]) -> Option<(ObjectRef, ObjectRef, Option<ScanLevel>)> {
    let (ty, rest) = take_str(rest)?;
    let (key, rest) = take_str(rest)?;
    let (rty, rest) = take_str(rest)?;
    let (rkey, rest) = take_str(rest)?;
    if !rest.is_empty() {
        return None;
    }
    let cap = match value {
        [NO_CAP] => None,
        [c] => Some(ScanLevel::new(*c).ok()?),
        _ => return None,
    };
    Some((obj_ref(&ty, key)?, obj_ref(&rty, rkey)?, cap))
}

/// A stored edge seen from one of its nodes: the other end, the record, the cap.
type StoredEdge = (ObjectRef, ObjectRef, Option<ScanLevel>);

/// Parse the entries under one node's prefix.
fn parse_edges(prefix_len: usize, entries: Vec<(IVec, IVec)>) -> SResult<Vec<StoredEdge>> {
    entries
        .into_iter()
        .map(|(k, v)| {
            parse_edge(&k[prefix_len..], &v)
                .ok_or_else(|| SledStoreError::decode("edge", "malformed"))
        })
        .collect()
}

/// One organization's level graph during a write: the tree as it is, with what the write changes
/// (objects written or deleted, edges added or removed) laid over it.
pub(crate) struct SledGraph<'a> {
    inner: &'a Inner,
    org: &'a OrgCode,
    /// Nodes this write stores (`Some`) or deletes (`None`), read instead of the tree.
    nodes: HashMap<ObjectRef, Option<NodeLevel>>,
    out_added: HashMap<ObjectRef, Vec<(ObjectRef, Option<ScanLevel>)>>,
    in_added: HashMap<ObjectRef, Vec<(ObjectRef, Option<ScanLevel>)>>,
    /// Removed edges: (record, source, target).
    removed: HashSet<(ObjectRef, ObjectRef, ObjectRef)>,
    /// Stored edges already read, by node (the tree does not change while the write is planned).
    stored_out: HashMap<ObjectRef, Vec<StoredEdge>>,
    stored_in: HashMap<ObjectRef, Vec<StoredEdge>>,
    /// What the algorithm set: node → (level, inherited_from).
    pub(crate) set: BTreeMap<ObjectRef, (Option<ScanLevel>, Option<ObjectRef>)>,
}

impl<'a> SledGraph<'a> {
    pub(crate) fn new(inner: &'a Inner, org: &'a OrgCode) -> Self {
        SledGraph {
            inner,
            org,
            nodes: HashMap::new(),
            out_added: HashMap::new(),
            in_added: HashMap::new(),
            removed: HashSet::new(),
            stored_out: HashMap::new(),
            stored_in: HashMap::new(),
            set: BTreeMap::new(),
        }
    }

    /// The stored edges under `tag` of each of `nodes` (distinct; answers in their order), read in
    /// key order with [`crate::keys::entries_under`].
    fn read_stored(&self, tag: u8, nodes: &[&ObjectRef]) -> SResult<Vec<Vec<StoredEdge>>> {
        let mut out = vec![Vec::new(); nodes.len()];
        // The nodes' prefixes sort as their (type, key) pairs do. A write's new objects mostly
        // have no edges at all: when no key lies between the lowest node's prefix and the end of
        // the highest's, one seek answers for all of them and no prefix is built.
        let order = |a: &&&ObjectRef, b: &&&ObjectRef| {
            (a.object_type.as_str(), a.key.as_str()).cmp(&(b.object_type.as_str(), b.key.as_str()))
        };
        let (Some(lowest), Some(highest)) =
            (nodes.iter().min_by(order), nodes.iter().max_by(order))
        else {
            return Ok(out);
        };
        let lowest = node_prefix(tag, self.org, lowest);
        let highest = node_prefix(tag, self.org, highest);
        if !crate::keys::any_between(&self.inner.objects, lowest.as_slice(), highest.as_slice())? {
            return Ok(out);
        }
        let mut keyed: Vec<(Vec<u8>, usize)> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (node_prefix(tag, self.org, n).into_vec(), i))
            .collect();
        keyed.sort();
        let (prefixes, at): (Vec<Vec<u8>>, Vec<usize>) = keyed.into_iter().unzip();
        let lens: Vec<usize> = prefixes.iter().map(Vec::len).collect();
        let found = crate::keys::entries_under(&self.inner.objects, prefixes)?;
        for ((len, i), entries) in lens.into_iter().zip(at).zip(found) {
            if let Some(slot) = out.get_mut(i) {
                *slot = parse_edges(len, entries)?;
            }
        }
        Ok(out)
    }

    /// Read the stored edges of `nodes` both ways in one ordered pass each, for the algorithm to
    /// find without reading again.
    pub(crate) fn prefetch<'n>(
        &mut self,
        nodes: impl IntoIterator<Item = &'n ObjectRef>,
    ) -> SResult<()> {
        let mut nodes: Vec<&ObjectRef> = nodes.into_iter().collect();
        nodes.sort();
        nodes.dedup();
        for tag in [T_OUT, T_IN] {
            let todo: Vec<&ObjectRef> = nodes
                .iter()
                .copied()
                .filter(|n| !self.cached(tag).contains_key(*n))
                .collect();
            let found = self.read_stored(tag, &todo)?;
            for (n, edges) in todo.into_iter().zip(found) {
                self.cache(tag).insert(n.clone(), edges);
            }
        }
        Ok(())
    }

    /// Those of `nodes` (distinct) that have stored edges either way (their edges kept for the
    /// algorithm), in one ordered pass each way: a write's new objects, which mostly have none,
    /// cost a seek per stretch of them rather than two per object.
    pub(crate) fn with_stored_edges(&mut self, nodes: Vec<ObjectRef>) -> SResult<Vec<ObjectRef>> {
        let refs: Vec<&ObjectRef> = nodes.iter().collect();
        let outs = self.read_stored(T_OUT, &refs)?;
        let ins = self.read_stored(T_IN, &refs)?;
        let mut keep = Vec::new();
        for ((n, out), r#in) in nodes.into_iter().zip(outs).zip(ins) {
            if out.is_empty() && r#in.is_empty() {
                continue;
            }
            self.stored_out.insert(n.clone(), out);
            self.stored_in.insert(n.clone(), r#in);
            keep.push(n);
        }
        Ok(keep)
    }

    fn cached(&self, tag: u8) -> &HashMap<ObjectRef, Vec<StoredEdge>> {
        if tag == T_OUT {
            &self.stored_out
        } else {
            &self.stored_in
        }
    }

    fn cache(&mut self, tag: u8) -> &mut HashMap<ObjectRef, Vec<StoredEdge>> {
        if tag == T_OUT {
            &mut self.stored_out
        } else {
            &mut self.stored_in
        }
    }

    /// A node as this write leaves it (`None`: deleted).
    pub(crate) fn overlay_node(&mut self, n: ObjectRef, level: Option<NodeLevel>) {
        self.nodes.insert(n, level);
    }

    /// An edge this write adds.
    pub(crate) fn overlay_added(&mut self, rel: &Relation) {
        self.out_added
            .entry(rel.source.clone())
            .or_default()
            .push((rel.target.clone(), rel.cap));
        self.in_added
            .entry(rel.target.clone())
            .or_default()
            .push((rel.source.clone(), rel.cap));
    }

    /// An edge this write removes.
    pub(crate) fn overlay_removed(&mut self, record: &ObjectRef, rel: &Relation) {
        self.removed
            .insert((record.clone(), rel.source.clone(), rel.target.clone()));
    }

    fn edges(&mut self, tag: u8, n: &ObjectRef) -> SResult<Vec<(ObjectRef, Option<ScanLevel>)>> {
        if !self.cache(tag).contains_key(n) {
            let edges = self.read_stored(tag, &[n])?.pop().unwrap_or_default();
            self.cache(tag).insert(n.clone(), edges);
        }
        let mut out: Vec<(ObjectRef, Option<ScanLevel>)> = self
            .cached(tag)
            .get(n)
            .into_iter()
            .flatten()
            .filter(|(other, record, _)| {
                let (s, t) = if tag == T_OUT { (n, other) } else { (other, n) };
                !self
                    .removed
                    .contains(&(record.clone(), s.clone(), t.clone()))
            })
            .map(|(other, _, cap)| (other.clone(), *cap))
            .collect();
        let added = if tag == T_OUT {
            &self.out_added
        } else {
            &self.in_added
        };
        if let Some(a) = added.get(n) {
            out.extend(a.iter().cloned());
        }
        Ok(out)
    }
}

impl LevelGraph for SledGraph<'_> {
    type Error = SledStoreError;

    fn node(&mut self, n: &ObjectRef) -> SResult<Option<NodeLevel>> {
        if let Some(v) = self.nodes.get(n) {
            return Ok(v.clone());
        }
        let pk = object_key(self.org, n.object_type, &n.key);
        match self.inner.objects.get(pk.as_slice())? {
            Some(v) => node_level(self.org, n.key.clone(), &v),
            None => Ok(None),
        }
    }

    fn set_inherited(
        &mut self,
        n: &ObjectRef,
        level: Option<ScanLevel>,
        from: Option<ObjectRef>,
    ) -> SResult<()> {
        self.set.insert(n.clone(), (level, from));
        Ok(())
    }

    fn in_edges(&mut self, n: &ObjectRef) -> SResult<Vec<(ObjectRef, Option<ScanLevel>)>> {
        self.edges(T_IN, n)
    }

    fn out_edges(&mut self, n: &ObjectRef) -> SResult<Vec<(ObjectRef, Option<ScanLevel>)>> {
        self.edges(T_OUT, n)
    }
}

/// Count one write's level work, begun at `started`.
pub(crate) fn account(inner: &Inner, started: std::time::Instant) {
    use std::sync::atomic::Ordering;
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    inner.levels_nanos.fetch_add(nanos, Ordering::Relaxed);
    inner.levels_writes.fetch_add(1, Ordering::Relaxed);
}

/// Give a stored object an inherited level.
pub(crate) fn apply(s: &mut StoredObject, level: Option<ScanLevel>, from: Option<ObjectRef>) {
    s.scan = Some(ScanProfile {
        level,
        declared: false,
    });
    s.inherited_from = from;
}

/// Write the levels the algorithm set on objects this write does not write itself: load each,
/// set its level and add it to `batch`.
pub(crate) fn write_loaded(
    inner: &Inner,
    org: &OrgCode,
    set: impl IntoIterator<Item = (ObjectRef, (Option<ScanLevel>, Option<ObjectRef>))>,
    batch: &mut sled::Batch,
) -> SResult<usize> {
    let mut n = 0;
    for (node, (level, from)) in set {
        let pk = object_key(org, node.object_type, &node.key);
        let Some(v) = inner.objects.get(pk.as_slice())? else {
            continue;
        };
        let mut r = Record::decode(org, node.key.clone(), &v)?;
        apply(&mut r.o, level, from);
        batch.insert(pk.into_vec(), r.encode()?);
        n += 1;
    }
    Ok(n)
}

/// The organizations that have objects, by skipping through the `o` keys (one seek each).
fn orgs(inner: &Inner) -> SResult<Vec<OrgCode>> {
    let mut out = Vec::new();
    let mut from = vec![b'o'];
    while let Some(entry) = inner.objects.range(from.as_slice()..).next() {
        let (k, _) = entry?;
        if k.first() != Some(&b'o') {
            break;
        }
        let (org, _) =
            take_str(&k[1..]).ok_or_else(|| SledStoreError::decode("object key", "malformed"))?;
        let code = OrgCode::new(&org).map_err(|e| SledStoreError::decode("object key", e))?;
        // Past every key of this organization: its component's terminator [0, 1] becomes [0, 2].
        from = Key::new(b'o').str(&org).into_vec();
        if let Some(last) = from.last_mut() {
            *last = 2;
        }
        out.push(code);
    }
    Ok(out)
}

/// An organization's nodes with their levels, and its edges.
type WholeGraph = (Vec<(ObjectRef, NodeLevel)>, Vec<Relation>);

/// Load one organization's whole graph: its nodes from the level bytes of their records, its
/// edges from the `e` keyspace.
fn load_graph(inner: &Inner, org: &OrgCode) -> SResult<WholeGraph> {
    let mut nodes = Vec::new();
    for ty in [
        ObjectType::Network,
        ObjectType::Hostname,
        ObjectType::IpAddress,
    ] {
        let prefix = type_prefix(org, ty).into_vec();
        for entry in inner.objects.scan_prefix(&prefix) {
            let (k, v) = entry?;
            let (key, _) = take_str(&k[prefix.len()..])
                .ok_or_else(|| SledStoreError::decode("object key", "malformed"))?;
            let key = stored_key(key);
            if let Some(l) = node_level(org, key.clone(), &v)? {
                nodes.push((
                    ObjectRef {
                        object_type: ty,
                        key,
                    },
                    l,
                ));
            }
        }
    }
    let mut edges = Vec::new();
    let prefix = Key::new(T_OUT).str(org.as_str()).into_vec();
    for entry in inner.objects.scan_prefix(&prefix) {
        let (k, v) = entry?;
        let rest = &k[prefix.len()..];
        let parsed = (|| {
            let (ty, rest) = take_str(rest)?;
            let (key, rest) = take_str(rest)?;
            let source = obj_ref(&ty, key)?;
            let (target, _record, cap) = parse_edge(rest, &v)?;
            Some(Relation {
                source,
                target,
                cap,
            })
        })();
        edges.push(parsed.ok_or_else(|| SledStoreError::decode("edge", "malformed"))?);
    }
    Ok((nodes, edges))
}

/// A full recomputation of `org`'s levels (every organization's when `None`, which also clears the
/// marker). Holds the object writer lock throughout. Returns how many objects changed.
pub(crate) fn recompute_blocking(inner: &Inner, org: Option<&OrgCode>) -> SResult<u64> {
    let _writer = inner.object_writer();
    let orgs = match org {
        Some(o) => vec![o.clone()],
        None => orgs(inner)?,
    };
    let mut changed = 0u64;
    for org in &orgs {
        let (nodes, edges) = load_graph(inner, org)?;
        let todo = levels::recompute_all(nodes, edges);
        changed += todo.len() as u64;
        for chunk in todo.chunks(RECOMPUTE_BATCH) {
            let mut batch = sled::Batch::default();
            let set = chunk
                .iter()
                .map(|(n, l)| (n.clone(), (l.level, l.inherited_from.clone())));
            write_loaded(inner, org, set, &mut batch)?;
            inner.objects.apply_batch(batch)?;
        }
        if !todo.is_empty() {
            tracing::info!(org = %org, changed = todo.len(), "recomputed scan levels");
        }
    }
    if org.is_none() {
        inner.objects.remove(marker_key())?;
    }
    Ok(changed)
}

/// Whether the marker is set.
pub(crate) fn needs_recompute(inner: &Inner) -> SResult<bool> {
    Ok(inner.objects.contains_key(marker_key())?)
}

/// Bring the `objects` tree from format version 2 to 3: the edges of every stored DNS record, and
/// the marker, so that the first start recomputes the levels. Idempotent; batches of
/// `MIGRATION_BATCH`. Returns how many records gave edges.
pub(crate) fn migrate_v2(tree: &sled::Tree) -> SResult<u64> {
    tree.insert(marker_key(), &[][..])?;
    let mut batch = sled::Batch::default();
    let mut pending = 0usize;
    let mut records = 0u64;
    for entry in tree.scan_prefix([b'o']) {
        let (k, v) = entry?;
        let parsed = (|| {
            let (org, rest) = take_str(&k[1..])?;
            let (ty, rest) = take_str(rest)?;
            let (key, _) = take_str(rest)?;
            Some((org, ty.parse::<ObjectType>().ok()?, key))
        })();
        let Some((org, ty, key)) = parsed else {
            return Err(SledStoreError::decode("object key", "malformed"));
        };
        if !ty.is_dns_record() {
            continue;
        }
        let org = OrgCode::new(&org).map_err(|e| SledStoreError::decode("object key", e))?;
        let key: NaturalKey = stored_key(key);
        let r = Record::decode(&org, key.clone(), &v)?;
        let rels = levels::relations(&r.o.object);
        if rels.is_empty() {
            continue;
        }
        let record = ObjectRef {
            object_type: ty,
            key,
        };
        insert_edges(&mut batch, &org, &record, &rels);
        records += 1;
        pending += 1;
        if pending >= crate::objects::MIGRATION_BATCH {
            tree.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    if pending > 0 {
        tree.apply_batch(batch)?;
    }
    Ok(records)
}
