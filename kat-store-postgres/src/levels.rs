//! Scan levels on PostgreSQL: the level graph kat-core's algorithm runs on ([`kat_core::levels`]),
//! read from `kat_objects` (the `scan_level`, `declared`, `inh_ty`, `inh_key` columns) and
//! `kat_edges`, inside the writing transaction.
//!
//! [`LevelGraph`] is synchronous and a database is not, so the algorithm runs on a cache of the
//! graph, in rounds:
//!
//! 1. Before the first round, the nodes the write changed and the ends of the edges it added or
//!    removed are fetched with their in- and out-edges, and the levels of those edges' other ends
//!    (three queries). For a usual write (new hostnames, addresses and records) that is everything
//!    the algorithm reads.
//! 2. A round runs [`levels::update`] on the cache. What the cache lacks is answered as absent
//!    (no node, no edges) and noted as a miss.
//! 3. A round with misses is thrown away: the misses are fetched, all at once (up to three
//!    queries), and the next round starts from scratch on the larger cache. A round without misses
//!    read only fetched data, so its result is exact; its level changes are written in the same
//!    transaction.
//!
//! The rounds end: the cache only grows, and the graph is finite. A write that reaches far (a
//! declared level set on a hub) takes one round per step of its reach, each with one batch of
//! queries, instead of one query per node. No thread blocks on the database and no runtime flavour
//! matters.
//!
//! The organization's advisory lock ([`crate::objects`]) is held throughout, so the graph does not
//! change under the algorithm.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;

use crate::Client;
use kat_core::levels::{self, Changes, LevelGraph, NodeLevel, Relation};
use kat_core::object::{NaturalKey, ObjectType, ScanLevel};
use kat_core::org::OrgCode;
use kat_core::task::ObjectRef;
use tokio_postgres::Row;

use crate::{PResult, PgStoreError};

/// Edges of one node: the other end and the cap.
type Adjacent = Vec<(ObjectRef, Option<ScanLevel>)>;

/// What the algorithm set: node → (level, inherited_from).
pub(crate) type LevelSet = BTreeMap<ObjectRef, (Option<ScanLevel>, Option<ObjectRef>)>;

/// A natural key read back from the database, as it was written (`NaturalKey::parse` is not used:
/// it refuses keys longer than 4096 bytes that `Object::natural_key` can produce).
pub(crate) fn stored_key(s: String) -> NaturalKey {
    NaturalKey::from_escaped_components([s])
}

/// An object type read back from the database.
pub(crate) fn stored_type(s: &str) -> PResult<ObjectType> {
    s.parse()
        .map_err(|e: kat_core::Error| PgStoreError::decode("object type", e.to_string()))
}

/// A reference read from a type and a key column.
pub(crate) fn stored_ref(ty: &str, key: String) -> PResult<ObjectRef> {
    Ok(ObjectRef {
        object_type: stored_type(ty)?,
        key: stored_key(key),
    })
}

/// A scan level read from a `smallint` column.
pub(crate) fn stored_level(v: Option<i16>) -> PResult<Option<ScanLevel>> {
    v.map(|l| {
        u8::try_from(l)
            .map_err(|e| PgStoreError::decode("scan level", e))
            .and_then(|l| ScanLevel::new(l).map_err(|e| PgStoreError::decode("scan level", e)))
    })
    .transpose()
}

/// A scan level as a `smallint`.
pub(crate) fn level_column(l: Option<ScanLevel>) -> Option<i16> {
    l.map(|l| i16::from(l.get()))
}

/// The columns that describe a node's level, read at `at` and the next four
/// (`scan_level, declared, inh_ty, inh_key`): `None` for no object or a type without levels.
pub(crate) fn node_at(row: &Row, at: usize) -> PResult<Option<NodeLevel>> {
    let declared: Option<bool> = row.try_get(at + 1)?;
    let Some(declared) = declared else {
        return Ok(None);
    };
    let level = stored_level(row.try_get(at)?)?;
    let ity: Option<&str> = row.try_get(at + 2)?;
    let ikey: Option<String> = row.try_get(at + 3)?;
    let inherited_from = match (ity, ikey) {
        (Some(t), Some(k)) => Some(stored_ref(t, k)?),
        _ => None,
    };
    Ok(Some(NodeLevel {
        level,
        declared,
        inherited_from,
    }))
}

/// The parts of the graph read so far.
#[derive(Debug, Default)]
struct Cache {
    nodes: HashMap<ObjectRef, Option<NodeLevel>>,
    out: HashMap<ObjectRef, Adjacent>,
    inn: HashMap<ObjectRef, Adjacent>,
}

/// What a round needed and the cache lacked.
#[derive(Debug, Default)]
struct Misses {
    nodes: HashSet<ObjectRef>,
    out: HashSet<ObjectRef>,
    inn: HashSet<ObjectRef>,
}

impl Misses {
    fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.out.is_empty() && self.inn.is_empty()
    }
}

/// One round's graph: the cache, the misses, and what the algorithm set.
struct CachedGraph<'a> {
    cache: &'a Cache,
    misses: Misses,
    set: LevelSet,
}

impl LevelGraph for CachedGraph<'_> {
    type Error = Infallible;

    fn node(&mut self, n: &ObjectRef) -> Result<Option<NodeLevel>, Infallible> {
        match self.cache.nodes.get(n) {
            Some(v) => Ok(v.clone()),
            None => {
                self.misses.nodes.insert(n.clone());
                Ok(None)
            }
        }
    }

    fn set_inherited(
        &mut self,
        n: &ObjectRef,
        level: Option<ScanLevel>,
        from: Option<ObjectRef>,
    ) -> Result<(), Infallible> {
        self.set.insert(n.clone(), (level, from));
        Ok(())
    }

    fn in_edges(&mut self, n: &ObjectRef) -> Result<Adjacent, Infallible> {
        match self.cache.inn.get(n) {
            Some(v) => Ok(v.clone()),
            None => {
                self.misses.inn.insert(n.clone());
                Ok(Vec::new())
            }
        }
    }

    fn out_edges(&mut self, n: &ObjectRef) -> Result<Adjacent, Infallible> {
        match self.cache.out.get(n) {
            Some(v) => Ok(v.clone()),
            None => {
                self.misses.out.insert(n.clone());
                Ok(Vec::new())
            }
        }
    }
}

fn columns<'a>(refs: impl IntoIterator<Item = &'a ObjectRef>) -> (Vec<&'a str>, Vec<&'a str>) {
    refs.into_iter()
        .map(|r| (r.object_type.as_str(), r.key.as_str()))
        .unzip()
}

// The queries below look up each given node by index (`LATERAL … OFFSET 0` keeps the planner
// from turning a few thousand lookups into a hash join over a whole table, which it otherwise
// prefers when its estimate of the `unnest` rows meets a table of some 100,000 rows).

const NODES: &str = "SELECT o.ty, o.key, o.scan_level, o.declared, o.inh_ty, o.inh_key \
     FROM unnest($2::text[], $3::text[]) AS t(ty, key) \
     CROSS JOIN LATERAL (SELECT * FROM kat_objects o \
         WHERE o.org = $1 AND o.ty = t.ty AND o.key = t.key OFFSET 0) o";

/// Edges out of the given nodes, with their targets' levels.
const OUT: &str = "SELECT e.src_ty, e.src_key, e.dst_ty, e.dst_key, e.cap, \
        o.scan_level, o.declared, o.inh_ty, o.inh_key \
     FROM unnest($2::text[], $3::text[]) AS t(ty, key) \
     CROSS JOIN LATERAL (SELECT * FROM kat_edges e \
         WHERE e.org = $1 AND e.src_ty = t.ty AND e.src_key = t.key OFFSET 0) e \
     LEFT JOIN LATERAL (SELECT * FROM kat_objects o \
         WHERE o.org = $1 AND o.ty = e.dst_ty AND o.key = e.dst_key OFFSET 0) o ON true";

/// Edges into the given nodes, with their sources' levels.
const IN: &str = "SELECT e.dst_ty, e.dst_key, e.src_ty, e.src_key, e.cap, \
        o.scan_level, o.declared, o.inh_ty, o.inh_key \
     FROM unnest($2::text[], $3::text[]) AS t(ty, key) \
     CROSS JOIN LATERAL (SELECT * FROM kat_edges e \
         WHERE e.org = $1 AND e.dst_ty = t.ty AND e.dst_key = t.key OFFSET 0) e \
     LEFT JOIN LATERAL (SELECT * FROM kat_objects o \
         WHERE o.org = $1 AND o.ty = e.src_ty AND o.key = e.src_key OFFSET 0) o ON true";

impl Cache {
    /// Fetch what `want` names and the cache lacks.
    async fn fetch(&mut self, c: &Client, org: &OrgCode, want: Misses) -> PResult<()> {
        let nodes: Vec<ObjectRef> = want
            .nodes
            .into_iter()
            .filter(|n| !self.nodes.contains_key(n))
            .collect();
        if !nodes.is_empty() {
            let (tys, keys) = columns(&nodes);
            let stmt = c.prepare_cached(NODES).await?;
            for row in c.query(&stmt, &[&org.as_str(), &tys, &keys]).await? {
                let n = stored_ref(row.try_get(0)?, row.try_get(1)?)?;
                let level = node_at(&row, 2)?;
                self.nodes.insert(n, level);
            }
            for n in nodes {
                self.nodes.entry(n).or_insert(None);
            }
        }
        for (outgoing, want) in [(true, want.out), (false, want.inn)] {
            let map = if outgoing { &self.out } else { &self.inn };
            let ends: Vec<ObjectRef> = want.into_iter().filter(|n| !map.contains_key(n)).collect();
            if ends.is_empty() {
                continue;
            }
            let (tys, keys) = columns(&ends);
            let sql = if outgoing { OUT } else { IN };
            let stmt = c.prepare_cached(sql).await?;
            let rows = c.query(&stmt, &[&org.as_str(), &tys, &keys]).await?;
            let mut got: HashMap<ObjectRef, Adjacent> = HashMap::new();
            for row in rows {
                let here = stored_ref(row.try_get(0)?, row.try_get(1)?)?;
                let other = stored_ref(row.try_get(2)?, row.try_get(3)?)?;
                let cap = stored_level(row.try_get(4)?)?;
                if !self.nodes.contains_key(&other) {
                    let level = node_at(&row, 5)?;
                    self.nodes.insert(other.clone(), level);
                }
                got.entry(here).or_default().push((other, cap));
            }
            let map = if outgoing {
                &mut self.out
            } else {
                &mut self.inn
            };
            for n in ends {
                let mut edges = got.remove(&n).unwrap_or_default();
                edges.sort();
                map.insert(n, edges);
            }
        }
        Ok(())
    }
}

/// Bring `org`'s levels up to date after a write whose rows (objects, edges) are already written in
/// the transaction `c` is in, and write the levels that changed. Returns what changed, for the
/// caller to show in what it returns.
pub(crate) async fn update(c: &Client, org: &OrgCode, changes: &Changes) -> PResult<LevelSet> {
    if changes.is_empty() {
        return Ok(LevelSet::new());
    }
    let mut cache = Cache::default();
    let mut seeds = Misses::default();
    let ends = changes
        .added
        .iter()
        .chain(&changes.removed)
        .flat_map(|e| [&e.source, &e.target]);
    for n in changes.nodes.iter().chain(ends) {
        seeds.nodes.insert(n.clone());
        seeds.out.insert(n.clone());
        seeds.inn.insert(n.clone());
    }
    cache.fetch(c, org, seeds).await?;
    let mut rounds = 1u32;
    loop {
        let mut g = CachedGraph {
            cache: &cache,
            misses: Misses::default(),
            set: LevelSet::new(),
        };
        match levels::update(&mut g, changes) {
            Ok(_) => {}
            Err(never) => match never {},
        }
        if g.misses.is_empty() {
            let set = g.set;
            if rounds > 4 {
                tracing::debug!(org = %org, rounds, changed = set.len(), "levels updated");
            }
            write(c, org, &set).await?;
            return Ok(set);
        }
        let misses = g.misses;
        cache.fetch(c, org, misses).await?;
        rounds += 1;
    }
}

/// Write inherited levels (one statement).
pub(crate) async fn write(c: &Client, org: &OrgCode, set: &LevelSet) -> PResult<()> {
    if set.is_empty() {
        return Ok(());
    }
    let mut tys = Vec::with_capacity(set.len());
    let mut keys = Vec::with_capacity(set.len());
    let mut lvls = Vec::with_capacity(set.len());
    let mut itys = Vec::with_capacity(set.len());
    let mut ikeys = Vec::with_capacity(set.len());
    for (n, (level, from)) in set {
        tys.push(n.object_type.as_str());
        keys.push(n.key.as_str());
        lvls.push(level_column(*level));
        itys.push(from.as_ref().map(|f| f.object_type.as_str()));
        ikeys.push(from.as_ref().map(|f| f.key.as_str()));
    }
    let stmt = c
        .prepare_cached(
            "UPDATE kat_objects o \
         SET scan_level = t.lvl, inh_ty = t.ity, inh_key = t.ikey \
         FROM unnest($2::text[], $3::text[], $4::int2[], $5::text[], $6::text[]) \
             AS t(ty, key, lvl, ity, ikey) \
         WHERE o.org = $1 AND o.ty = t.ty AND o.key = t.key AND o.declared = false",
        )
        .await?;
    c.execute(&stmt, &[&org.as_str(), &tys, &keys, &lvls, &itys, &ikeys])
        .await?;
    Ok(())
}

/// A full recomputation of `org`'s levels in the transaction `c` is in (which holds the
/// organization's lock): its whole graph is loaded (the level columns and the edges, never an
/// object's body) and [`levels::recompute_all`] runs on it. Returns how many objects changed.
pub(crate) async fn recompute(c: &Client, org: &OrgCode) -> PResult<u64> {
    let mut nodes = Vec::new();
    for row in c
        .query(
            "SELECT ty, key, scan_level, declared, inh_ty, inh_key FROM kat_objects \
             WHERE org = $1 AND declared IS NOT NULL",
            &[&org.as_str()],
        )
        .await?
    {
        let n = stored_ref(row.try_get(0)?, row.try_get(1)?)?;
        if let Some(l) = node_at(&row, 2)? {
            nodes.push((n, l));
        }
    }
    let mut edges = Vec::new();
    for row in c
        .query(
            "SELECT src_ty, src_key, dst_ty, dst_key, cap FROM kat_edges WHERE org = $1",
            &[&org.as_str()],
        )
        .await?
    {
        edges.push(Relation {
            source: stored_ref(row.try_get(0)?, row.try_get(1)?)?,
            target: stored_ref(row.try_get(2)?, row.try_get(3)?)?,
            cap: stored_level(row.try_get(4)?)?,
        });
    }
    let changed = levels::recompute_all(nodes, edges);
    let set: LevelSet = changed
        .into_iter()
        .map(|(n, l)| (n, (l.level, l.inherited_from)))
        .collect();
    write(c, org, &set).await?;
    if !set.is_empty() {
        tracing::info!(org = %org, changed = set.len(), "recomputed scan levels");
    }
    Ok(set.len() as u64)
}
