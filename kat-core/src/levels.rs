//! Scan levels, declared and inherited: the relations between objects that carry a level, and the
//! algorithm that keeps every inherited level up to date, written once against a small graph
//! interface ([`LevelGraph`]) that every store backend implements.
//!
//! # Semantics
//!
//! The nodes are the hostnames and IP addresses of one organization (networks keep only what was
//! declared: nothing leads to a network). The edges come from DNS records ([`relations`]), each
//! with an optional cap:
//!
//! | record | edge | cap |
//! | --- | --- | --- |
//! | A, AAAA | hostname → address and address → hostname | none |
//! | CNAME | owner → target | none |
//! | NS | owner → name server | 1 |
//! | MX | owner → mail server | 1 |
//! | PTR | address → the hostname it names | 1 |
//!
//! A declared object keeps the level an operator set. Every other node's level is the maximum, over
//! its in-edges `u → v` whose source has a level, of `min(level(u), cap)`; with no such edge it has
//! no level. Values start only at declared objects, so a cycle cannot hold a level up by itself
//! (widest-path, or bottleneck-path, semantics). `inherited_from` names the source that gives the
//! maximum; the inherited_from links form a forest rooted at declared objects (each link points at a
//! node whose level was settled first), which is what lets a decrease repair only the nodes below
//! what changed. Organizations are separate graphs.
//!
//! # The algorithm
//!
//! [`update`] brings levels up to date after a write ([`Changes`]: nodes created, deleted or given a
//! new profile, edges added and removed):
//!
//! 1. **Decreases**: the set `R` of non-declared nodes whose `inherited_from` chain runs through a
//!    changed node or a removed edge (plus the changed non-declared nodes themselves) is reset.
//! 2. `R` is settled again from its in-neighbours outside `R`, highest level first (Dijkstra on
//!    bottleneck paths, restricted to `R`).
//! 3. **Increases** propagate from `R`, from changed nodes and from the sources of added edges,
//!    highest level first, and stop where nothing improves.
//!
//! [`recompute`] settles every non-declared node from the declared ones (step 2 with `R` = all),
//! and gives the same levels as any sequence of [`update`]s (a property test holds the two to it).
//!
//! ```
//! use kat_core::levels::{Changes, LevelGraph, MemoryGraph, NodeLevel, Relation, update};
//! use kat_core::object::{NaturalKey, ObjectType, ScanLevel};
//! use kat_core::task::ObjectRef;
//! let node = |t, k: &str| ObjectRef { object_type: t, key: NaturalKey::parse(k).unwrap() };
//! let host = node(ObjectType::Hostname, "internet|example.com");
//! let ip = node(ObjectType::IpAddress, "internet|192.0.2.1");
//! let mut g = MemoryGraph::default();
//! g.add_node(host.clone(), NodeLevel::declared(Some(ScanLevel::new(2).unwrap())));
//! g.add_node(ip.clone(), NodeLevel::default());
//! let a = Relation { source: host.clone(), target: ip.clone(), cap: None };
//! g.add_edge(&a);
//! update(&mut g, &Changes { added: vec![a], ..Changes::default() }).unwrap();
//! let got = g.node(&ip).unwrap().unwrap();
//! assert_eq!(got.level, Some(ScanLevel::new(2).unwrap()));
//! assert_eq!(got.inherited_from, Some(host));
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::convert::Infallible;

use serde::{Deserialize, Serialize};

use crate::object::{DnsData, Object, ObjectType, ScanLevel, ScanProfile};
use crate::task::ObjectRef;

/// The cap of the edges a name server, a mail server or a PTR name gets: level 1.
pub const CAPPED: ScanLevel = ScanLevel::ONE;

/// One edge: `source`'s level flows to `target`, at most `cap`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Relation {
    /// Where the level comes from.
    pub source: ObjectRef,
    /// Where it goes.
    pub target: ObjectRef,
    /// The most the target gets through this edge (`None`: the source's whole level).
    pub cap: Option<ScanLevel>,
}

/// The edges an object creates: none unless it is an A, AAAA, CNAME, NS, MX or PTR record.
///
/// ```
/// use kat_core::levels::relations;
/// use kat_core::object::{Object, ObjectType};
/// let ns = Object::from_json(ObjectType::DnsNsRecord,
///     &serde_json::json!({"hostname": "example.com", "name_server": "ns1.example.net"})).unwrap();
/// let r = relations(&ns);
/// assert_eq!(r.len(), 1);
/// assert_eq!(r[0].target.key.as_str(), "internet|ns1.example.net");
/// assert_eq!(r[0].cap.map(|c| c.get()), Some(1));
/// ```
pub fn relations(o: &Object) -> Vec<Relation> {
    let Object::Dns(r) = o else {
        return Vec::new();
    };
    let host = |h: &crate::object::HostnameRef| ObjectRef {
        object_type: ObjectType::Hostname,
        key: h.key(),
    };
    let ip = |a: &crate::object::IpRef| ObjectRef {
        object_type: ObjectType::IpAddress,
        key: a.key(),
    };
    let rel = |source, target, cap| Relation {
        source,
        target,
        cap,
    };
    let owner = host(&r.hostname);
    match &r.data {
        DnsData::A(a) | DnsData::Aaaa(a) => {
            vec![rel(owner.clone(), ip(a), None), rel(ip(a), owner, None)]
        }
        DnsData::Cname(t) => vec![rel(owner, host(t), None)],
        DnsData::Ns(t) => vec![rel(owner, host(t), Some(CAPPED))],
        DnsData::Mx {
            mail_server: Some(m),
            ..
        } => vec![rel(owner, host(m), Some(CAPPED))],
        DnsData::Ptr(a) => vec![rel(ip(a), owner, Some(CAPPED))],
        _ => Vec::new(),
    }
}

/// A node's level: declared or inherited, and where an inherited one comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeLevel {
    /// The effective level (`None`: no scanning).
    pub level: Option<ScanLevel>,
    /// Whether an operator set it.
    pub declared: bool,
    /// For an inherited level, the source that gives it.
    pub inherited_from: Option<ObjectRef>,
}

impl NodeLevel {
    /// A declared level.
    pub fn declared(level: Option<ScanLevel>) -> Self {
        NodeLevel {
            level,
            declared: true,
            inherited_from: None,
        }
    }

    /// The profile the store keeps (`level`, `declared`).
    pub fn profile(&self) -> ScanProfile {
        ScanProfile {
            level: self.level,
            declared: self.declared,
        }
    }
}

/// What a backend gives the algorithm: the level of a node and its edges, and a way to set an
/// inherited level. Implemented by the memory store, `kat-store-sled` and [`MemoryGraph`].
///
/// Edges may name nodes that do not exist (a record outlives a deleted hostname): [`LevelGraph::node`]
/// answers `None` for those and the algorithm skips them.
pub trait LevelGraph {
    /// The backend's error.
    type Error;
    /// A node's level, or `None` when no such object exists.
    ///
    /// # Errors
    /// The backend's.
    fn node(&mut self, n: &ObjectRef) -> Result<Option<NodeLevel>, Self::Error>;
    /// Set a non-declared node's inherited level and source (called only with a changed value).
    ///
    /// # Errors
    /// The backend's.
    fn set_inherited(
        &mut self,
        n: &ObjectRef,
        level: Option<ScanLevel>,
        from: Option<ObjectRef>,
    ) -> Result<(), Self::Error>;
    /// The edges into `n`: each source and cap (one per edge; parallel edges may repeat a source).
    ///
    /// # Errors
    /// The backend's.
    fn in_edges(
        &mut self,
        n: &ObjectRef,
    ) -> Result<Vec<(ObjectRef, Option<ScanLevel>)>, Self::Error>;
    /// The edges out of `n`: each target and cap.
    ///
    /// # Errors
    /// The backend's.
    fn out_edges(
        &mut self,
        n: &ObjectRef,
    ) -> Result<Vec<(ObjectRef, Option<ScanLevel>)>, Self::Error>;
}

/// What a write changed, for [`update`]. The graph must already show the write (new edges present,
/// removed ones gone, profiles set, deleted nodes absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Nodes created, deleted, or given a new profile (declared level set, or set back to inherited).
    pub nodes: Vec<ObjectRef>,
    /// Edges added.
    pub added: Vec<Relation>,
    /// Edges removed.
    pub removed: Vec<Relation>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.added.is_empty() && self.removed.is_empty()
    }
}

fn contribution(level: Option<ScanLevel>, cap: Option<ScanLevel>) -> Option<ScanLevel> {
    let l = level?;
    Some(match cap {
        Some(c) if c < l => c,
        _ => l,
    })
}

/// The algorithm's working state over a graph: every node read once, changes written at the end.
struct Work<'g, G: LevelGraph> {
    g: &'g mut G,
    original: HashMap<ObjectRef, Option<NodeLevel>>,
    current: HashMap<ObjectRef, Option<NodeLevel>>,
}

impl<'g, G: LevelGraph> Work<'g, G> {
    fn new(g: &'g mut G) -> Self {
        Work {
            g,
            original: HashMap::new(),
            current: HashMap::new(),
        }
    }

    fn get(&mut self, n: &ObjectRef) -> Result<Option<&NodeLevel>, G::Error> {
        if !self.current.contains_key(n) {
            let v = self.g.node(n)?;
            self.original.insert(n.clone(), v.clone());
            self.current.insert(n.clone(), v);
        }
        Ok(self.current.get(n).and_then(Option::as_ref))
    }

    fn set(&mut self, n: &ObjectRef, level: Option<ScanLevel>, from: Option<ObjectRef>) {
        if let Some(Some(s)) = self.current.get_mut(n) {
            s.level = level;
            s.inherited_from = from;
        }
    }

    /// Write what changed; returns how many nodes changed.
    fn finish(self) -> Result<u64, G::Error> {
        let Work {
            g,
            original,
            current,
        } = self;
        let mut changed: Vec<(ObjectRef, NodeLevel)> = current
            .into_iter()
            .filter_map(|(n, v)| {
                let v = v?;
                (!v.declared && original.get(&n).and_then(Option::as_ref) != Some(&v))
                    .then_some((n, v))
            })
            .collect();
        changed.sort_by(|a, b| a.0.cmp(&b.0));
        let n = changed.len() as u64;
        for (node, v) in changed {
            g.set_inherited(&node, v.level, v.inherited_from)?;
        }
        Ok(n)
    }

    /// Reset `r` (non-declared nodes) and settle it from its in-neighbours outside `r`, highest
    /// level first; returns the nodes of `r` that got a level.
    fn settle(&mut self, r: &HashSet<ObjectRef>) -> Result<Vec<ObjectRef>, G::Error> {
        let mut order: Vec<&ObjectRef> = r.iter().collect();
        order.sort();
        let mut tentative: HashMap<ObjectRef, ScanLevel> = HashMap::new();
        let mut heap: BinaryHeap<(ScanLevel, Reverse<ObjectRef>, Reverse<ObjectRef>)> =
            BinaryHeap::new();
        for &n in &order {
            let mut best: Option<(ScanLevel, ObjectRef)> = None;
            for (u, cap) in self.g.in_edges(n)? {
                if r.contains(&u) {
                    continue;
                }
                let Some(c) = contribution(self.get(&u)?.and_then(|s| s.level), cap) else {
                    continue;
                };
                let better = match &best {
                    None => true,
                    Some((b, bu)) => c > *b || (c == *b && u < *bu),
                };
                if better {
                    best = Some((c, u));
                }
            }
            if let Some((c, u)) = best {
                tentative.insert(n.clone(), c);
                heap.push((c, Reverse(n.clone()), Reverse(u)));
            }
        }
        for &n in &order {
            self.set(n, None, None);
        }
        let mut done: HashSet<ObjectRef> = HashSet::new();
        let mut settled = Vec::new();
        while let Some((c, Reverse(n), Reverse(from))) = heap.pop() {
            if !done.insert(n.clone()) {
                continue;
            }
            self.set(&n, Some(c), Some(from));
            for (w, cap) in self.g.out_edges(&n)? {
                if !r.contains(&w) || done.contains(&w) {
                    continue;
                }
                let Some(c2) = contribution(Some(c), cap) else {
                    continue;
                };
                if tentative.get(&w).is_none_or(|t| c2 > *t) {
                    tentative.insert(w.clone(), c2);
                    heap.push((c2, Reverse(w), Reverse(n.clone())));
                }
            }
            settled.push(n);
        }
        Ok(settled)
    }

    /// Propagate increases from `seeds` and along `added` edges, highest level first, stopping
    /// where nothing improves.
    fn raise(&mut self, seeds: Vec<ObjectRef>, added: &[Relation]) -> Result<(), G::Error> {
        let mut heap: BinaryHeap<(ScanLevel, Reverse<ObjectRef>)> = BinaryHeap::new();
        for s in seeds {
            if let Some(l) = self.get(&s)?.and_then(|v| v.level) {
                heap.push((l, Reverse(s)));
            }
        }
        // An added edge can raise only its own target: no need to look at its source's other edges.
        for e in added {
            let Some(c) = contribution(self.get(&e.source)?.and_then(|v| v.level), e.cap) else {
                continue;
            };
            let improves = self
                .get(&e.target)?
                .is_some_and(|s| !s.declared && s.level.is_none_or(|cur| c > cur));
            if improves {
                self.set(&e.target, Some(c), Some(e.source.clone()));
                heap.push((c, Reverse(e.target.clone())));
            }
        }
        let mut done: HashMap<ObjectRef, ScanLevel> = HashMap::new();
        while let Some((l, Reverse(x))) = heap.pop() {
            if self.get(&x)?.and_then(|v| v.level) != Some(l) {
                continue; // stale
            }
            if done.get(&x).is_some_and(|d| *d >= l) {
                continue; // already propagated at this level
            }
            done.insert(x.clone(), l);
            for (w, cap) in self.g.out_edges(&x)? {
                let Some(c) = contribution(Some(l), cap) else {
                    continue;
                };
                let improves = match self.get(&w)? {
                    Some(s) => !s.declared && s.level.is_none_or(|cur| c > cur),
                    None => false,
                };
                if improves {
                    self.set(&w, Some(c), Some(x.clone()));
                    heap.push((c, Reverse(w)));
                }
            }
        }
        Ok(())
    }
}

/// Bring levels up to date after a write; returns how many nodes' inherited level or source
/// changed (and were written with [`LevelGraph::set_inherited`]).
///
/// # Errors
/// The graph's.
pub fn update<G: LevelGraph>(g: &mut G, changes: &Changes) -> Result<u64, G::Error> {
    if changes.is_empty() {
        return Ok(0);
    }
    let mut w = Work::new(g);
    // 1. Everything whose inherited_from chain runs through a changed node or a removed edge.
    let mut r: HashSet<ObjectRef> = HashSet::new();
    let mut stack: Vec<ObjectRef> = Vec::new();
    for n in &changes.nodes {
        if w.get(n)?.is_some_and(|s| !s.declared) {
            r.insert(n.clone());
        }
        stack.push(n.clone());
    }
    for e in &changes.removed {
        let hit = w
            .get(&e.target)?
            .is_some_and(|s| !s.declared && s.inherited_from.as_ref() == Some(&e.source));
        if hit && r.insert(e.target.clone()) {
            stack.push(e.target.clone());
        }
    }
    let mut visited: HashSet<ObjectRef> = HashSet::new();
    while let Some(x) = stack.pop() {
        if !visited.insert(x.clone()) {
            continue;
        }
        for (t, _) in w.g.out_edges(&x)? {
            let hit = w
                .get(&t)?
                .is_some_and(|s| !s.declared && s.inherited_from.as_ref() == Some(&x));
            if hit && r.insert(t.clone()) {
                stack.push(t);
            }
        }
    }
    // 2. Settle them again from outside.
    let mut seeds = w.settle(&r)?;
    // 3. Increases.
    seeds.extend(changes.nodes.iter().cloned());
    w.raise(seeds, &changes.added)?;
    w.finish()
}

/// Settle every non-declared node of `nodes` from the declared ones: a full recomputation. Returns
/// how many nodes changed.
///
/// # Errors
/// The graph's.
pub fn recompute<G: LevelGraph>(
    g: &mut G,
    nodes: impl IntoIterator<Item = ObjectRef>,
) -> Result<u64, G::Error> {
    let mut w = Work::new(g);
    let mut r = HashSet::new();
    for n in nodes {
        if w.get(&n)?.is_some_and(|s| !s.declared) {
            r.insert(n);
        }
    }
    w.settle(&r)?;
    w.finish()
}

/// A full recomputation of a whole graph held in memory: what [`recompute`] gives, on integer ids
/// instead of the [`LevelGraph`] interface (what a backend runs after loading every node and edge
/// of an organization). Edges naming a node that is not in `nodes` are ignored. Returns the nodes
/// whose level or `inherited_from` changed, with their new level, in node order.
///
/// ```
/// use kat_core::levels::{NodeLevel, Relation, recompute_all};
/// use kat_core::object::{NaturalKey, ObjectType, ScanLevel};
/// use kat_core::task::ObjectRef;
/// let node = |k: &str| ObjectRef { object_type: ObjectType::Hostname, key: NaturalKey::parse(k).unwrap() };
/// let (a, b) = (node("internet|a.example"), node("internet|b.example"));
/// let nodes = vec![
///     (a.clone(), NodeLevel::declared(Some(ScanLevel::new(3).unwrap()))),
///     (b.clone(), NodeLevel::default()),
/// ];
/// let changed = recompute_all(nodes, vec![Relation { source: a.clone(), target: b.clone(), cap: None }]);
/// assert_eq!(changed, vec![(b, NodeLevel { level: Some(ScanLevel::new(3).unwrap()), declared: false, inherited_from: Some(a) })]);
/// ```
pub fn recompute_all(
    mut nodes: Vec<(ObjectRef, NodeLevel)>,
    edges: impl IntoIterator<Item = Relation>,
) -> Vec<(ObjectRef, NodeLevel)> {
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    nodes.dedup_by(|a, b| a.0 == b.0);
    let n = nodes.len();
    let id: HashMap<&ObjectRef, u32> = nodes
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k, u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    let mut inn: Vec<Vec<(u32, Option<ScanLevel>)>> = vec![Vec::new(); n];
    let mut out: Vec<Vec<(u32, Option<ScanLevel>)>> = vec![Vec::new(); n];
    for e in edges {
        if let (Some(&s), Some(&t)) = (id.get(&e.source), id.get(&e.target)) {
            inn[t as usize].push((s, e.cap));
            out[s as usize].push((t, e.cap));
        }
    }
    drop(id);
    let declared: Vec<bool> = nodes.iter().map(|(_, l)| l.declared).collect();
    let mut level: Vec<Option<ScanLevel>> = nodes
        .iter()
        .map(|(_, l)| if l.declared { l.level } else { None })
        .collect();
    let mut from: Vec<Option<u32>> = vec![None; n];
    let mut tentative: Vec<Option<ScanLevel>> = vec![None; n];
    let mut heap: BinaryHeap<(ScanLevel, Reverse<u32>, Reverse<u32>)> = BinaryHeap::new();
    for r in 0..n {
        if declared[r] {
            continue;
        }
        let mut best: Option<(ScanLevel, u32)> = None;
        for &(u, cap) in &inn[r] {
            if !declared[u as usize] {
                continue;
            }
            let Some(c) = contribution(level[u as usize], cap) else {
                continue;
            };
            if best.is_none_or(|(b, bu)| c > b || (c == b && u < bu)) {
                best = Some((c, u));
            }
        }
        if let Some((c, u)) = best {
            tentative[r] = Some(c);
            heap.push((c, Reverse(r as u32), Reverse(u)));
        }
    }
    let mut done = vec![false; n];
    while let Some((c, Reverse(r), Reverse(u))) = heap.pop() {
        let ri = r as usize;
        if done[ri] {
            continue;
        }
        done[ri] = true;
        level[ri] = Some(c);
        from[ri] = Some(u);
        for &(w, cap) in &out[ri] {
            let wi = w as usize;
            if declared[wi] || done[wi] {
                continue;
            }
            let Some(c2) = contribution(Some(c), cap) else {
                continue;
            };
            if tentative[wi].is_none_or(|t| c2 > t) {
                tentative[wi] = Some(c2);
                heap.push((c2, Reverse(w), Reverse(r)));
            }
        }
    }
    let refs: Vec<ObjectRef> = nodes.iter().map(|(k, _)| k.clone()).collect();
    nodes
        .into_iter()
        .enumerate()
        .filter_map(|(i, (k, old))| {
            if old.declared {
                return None;
            }
            let new = NodeLevel {
                level: level[i],
                declared: false,
                inherited_from: from[i].map(|f| refs[f as usize].clone()),
            };
            (new != old).then_some((k, new))
        })
        .collect()
}

/// Edges indexed both ways, each tagged with the record that creates it (so parallel edges of two
/// records, such as an A and a PTR record between the same two objects, stay apart).
#[derive(Debug, Clone, Default)]
pub struct EdgeIndex {
    out: HashMap<ObjectRef, BTreeMap<(ObjectRef, ObjectRef), Option<ScanLevel>>>,
    inn: HashMap<ObjectRef, BTreeMap<(ObjectRef, ObjectRef), Option<ScanLevel>>>,
}

impl EdgeIndex {
    /// Add the edge `rel` of `record`; `false` when it was there already.
    pub fn insert(&mut self, record: &ObjectRef, rel: &Relation) -> bool {
        self.inn
            .entry(rel.target.clone())
            .or_default()
            .insert((rel.source.clone(), record.clone()), rel.cap);
        self.out
            .entry(rel.source.clone())
            .or_default()
            .insert((rel.target.clone(), record.clone()), rel.cap)
            .is_none()
    }

    /// Remove the edge `rel` of `record`; `false` when it was not there.
    pub fn remove(&mut self, record: &ObjectRef, rel: &Relation) -> bool {
        if let Some(m) = self.inn.get_mut(&rel.target) {
            m.remove(&(rel.source.clone(), record.clone()));
            if m.is_empty() {
                self.inn.remove(&rel.target);
            }
        }
        let Some(m) = self.out.get_mut(&rel.source) else {
            return false;
        };
        let had = m.remove(&(rel.target.clone(), record.clone())).is_some();
        if m.is_empty() {
            self.out.remove(&rel.source);
        }
        had
    }

    /// The edges into `n`.
    pub fn in_edges(&self, n: &ObjectRef) -> Vec<(ObjectRef, Option<ScanLevel>)> {
        self.inn
            .get(n)
            .map(|m| m.iter().map(|((s, _), c)| (s.clone(), *c)).collect())
            .unwrap_or_default()
    }

    /// The edges out of `n`.
    pub fn out_edges(&self, n: &ObjectRef) -> Vec<(ObjectRef, Option<ScanLevel>)> {
        self.out
            .get(n)
            .map(|m| m.iter().map(|((t, _), c)| (t.clone(), *c)).collect())
            .unwrap_or_default()
    }

    /// How many edges there are.
    pub fn len(&self) -> usize {
        self.out.values().map(BTreeMap::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }
}

/// A whole graph in memory: what a backend loads for a full recomputation (and what the tests use).
#[derive(Debug, Clone, Default)]
pub struct MemoryGraph {
    nodes: HashMap<ObjectRef, NodeLevel>,
    edges: EdgeIndex,
    /// Every node [`LevelGraph::set_inherited`] changed, in the order it was called.
    pub changed: Vec<ObjectRef>,
}

impl MemoryGraph {
    /// Add (or replace) a node.
    pub fn add_node(&mut self, n: ObjectRef, level: NodeLevel) {
        self.nodes.insert(n, level);
    }

    /// Remove a node (its edges stay, as a deleted hostname's records do).
    pub fn remove_node(&mut self, n: &ObjectRef) -> Option<NodeLevel> {
        self.nodes.remove(n)
    }

    /// Add an edge (tagged with no record: one per source, target and cap).
    pub fn add_edge(&mut self, rel: &Relation) -> bool {
        self.edges.insert(&Self::untagged(rel), rel)
    }

    /// Add an edge of `record`.
    pub fn add_record_edge(&mut self, record: &ObjectRef, rel: &Relation) -> bool {
        self.edges.insert(record, rel)
    }

    /// Remove an edge of `record`.
    pub fn remove_record_edge(&mut self, record: &ObjectRef, rel: &Relation) -> bool {
        self.edges.remove(record, rel)
    }

    fn untagged(rel: &Relation) -> ObjectRef {
        ObjectRef {
            object_type: ObjectType::Network,
            key: crate::object::NaturalKey::from_parts([rel
                .cap
                .map_or("none".to_string(), |c| c.get().to_string())]),
        }
    }

    /// Every node and its level.
    pub fn nodes(&self) -> impl Iterator<Item = (&ObjectRef, &NodeLevel)> {
        self.nodes.iter()
    }

    /// The edges.
    pub fn edges(&self) -> &EdgeIndex {
        &self.edges
    }
}

impl LevelGraph for MemoryGraph {
    type Error = Infallible;

    fn node(&mut self, n: &ObjectRef) -> Result<Option<NodeLevel>, Infallible> {
        Ok(self.nodes.get(n).cloned())
    }

    fn set_inherited(
        &mut self,
        n: &ObjectRef,
        level: Option<ScanLevel>,
        from: Option<ObjectRef>,
    ) -> Result<(), Infallible> {
        if let Some(s) = self.nodes.get_mut(n) {
            s.level = level;
            s.inherited_from = from;
            self.changed.push(n.clone());
        }
        Ok(())
    }

    fn in_edges(
        &mut self,
        n: &ObjectRef,
    ) -> Result<Vec<(ObjectRef, Option<ScanLevel>)>, Infallible> {
        Ok(self.edges.in_edges(n))
    }

    fn out_edges(
        &mut self,
        n: &ObjectRef,
    ) -> Result<Vec<(ObjectRef, Option<ScanLevel>)>, Infallible> {
        Ok(self.edges.out_edges(n))
    }
}

#[cfg(test)]
mod tests;
