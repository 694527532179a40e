use super::*;
use crate::object::NaturalKey;
use proptest::prelude::*;

fn n(i: usize) -> ObjectRef {
    ObjectRef {
        object_type: if i.is_multiple_of(2) {
            ObjectType::Hostname
        } else {
            ObjectType::IpAddress
        },
        key: NaturalKey::from_parts(["internet", &format!("n{i}")]),
    }
}

fn lv(l: u8) -> Option<ScanLevel> {
    Some(ScanLevel::new(l).expect("level"))
}

fn rel(s: usize, t: usize, cap: Option<u8>) -> Relation {
    Relation {
        source: n(s),
        target: n(t),
        cap: cap.and_then(lv),
    }
}

fn level(g: &mut MemoryGraph, i: usize) -> Option<u8> {
    g.node(&n(i))
        .expect("infallible")
        .and_then(|s| s.level)
        .map(ScanLevel::get)
}

fn from(g: &mut MemoryGraph, i: usize) -> Option<ObjectRef> {
    g.node(&n(i))
        .expect("infallible")
        .and_then(|s| s.inherited_from)
}

/// A graph of `count` inherited nodes with `declared` ones set.
fn graph(count: usize, declared: &[(usize, u8)]) -> MemoryGraph {
    let mut g = MemoryGraph::default();
    for i in 0..count {
        g.add_node(n(i), NodeLevel::default());
    }
    for &(i, l) in declared {
        g.add_node(n(i), NodeLevel::declared(lv(l)));
    }
    g
}

fn add(g: &mut MemoryGraph, r: Relation) {
    g.add_edge(&r);
    update(
        g,
        &Changes {
            added: vec![r],
            ..Changes::default()
        },
    )
    .expect("infallible");
}

fn remove(g: &mut MemoryGraph, r: Relation) {
    g.remove_record_edge(&MemoryGraph::untagged(&r), &r);
    update(
        g,
        &Changes {
            removed: vec![r],
            ..Changes::default()
        },
    )
    .expect("infallible");
}

fn set(g: &mut MemoryGraph, i: usize, l: NodeLevel) {
    g.add_node(n(i), l);
    update(
        g,
        &Changes {
            nodes: vec![n(i)],
            ..Changes::default()
        },
    )
    .expect("infallible");
}

#[test]
fn dns_records_give_the_documented_edges() {
    let o = |ty, v: serde_json::Value| Object::from_json(ty, &v).expect("object");
    let a = relations(&o(
        ObjectType::DnsARecord,
        serde_json::json!({"hostname": "a.example", "ip_address": "192.0.2.1"}),
    ));
    assert_eq!(a.len(), 2);
    assert!(a.iter().all(|r| r.cap.is_none()));
    assert_eq!(a[0].source.object_type, ObjectType::Hostname);
    assert_eq!(a[1].source.object_type, ObjectType::IpAddress);
    let cname = relations(&o(
        ObjectType::DnsCnameRecord,
        serde_json::json!({"hostname": "www.example", "target": "cdn.example"}),
    ));
    assert_eq!(cname[0].source.key.as_str(), "internet|www.example");
    assert_eq!(cname[0].target.key.as_str(), "internet|cdn.example");
    assert_eq!(cname[0].cap, None);
    let mx = relations(&o(
        ObjectType::DnsMxRecord,
        serde_json::json!({"hostname": "example", "preference": 10, "mail_server": "mx.example"}),
    ));
    assert_eq!(mx[0].cap, Some(CAPPED));
    let ptr = relations(&o(
        ObjectType::DnsPtrRecord,
        serde_json::json!({"hostname": "a.example", "ip_address": "192.0.2.1"}),
    ));
    assert_eq!(ptr[0].source.object_type, ObjectType::IpAddress);
    assert_eq!(ptr[0].target.key.as_str(), "internet|a.example");
    assert_eq!(ptr[0].cap, Some(CAPPED));
    let txt = relations(&o(
        ObjectType::DnsTxtRecord,
        serde_json::json!({"hostname": "example", "value": "v=spf1"}),
    ));
    assert!(txt.is_empty());
    let null_mx = relations(&o(
        ObjectType::DnsMxRecord,
        serde_json::json!({"hostname": "example", "preference": 0}),
    ));
    assert!(null_mx.is_empty());
}

#[test]
fn a_chain_inherits_and_caps_apply() {
    let mut g = graph(4, &[(0, 3)]);
    add(&mut g, rel(0, 1, None));
    add(&mut g, rel(1, 2, Some(1)));
    add(&mut g, rel(2, 3, None));
    assert_eq!(level(&mut g, 1), Some(3));
    assert_eq!(level(&mut g, 2), Some(1));
    assert_eq!(level(&mut g, 3), Some(1));
    assert_eq!(from(&mut g, 3), Some(n(2)));
}

#[test]
fn a_diamond_takes_the_maximum_and_decays_to_the_other_source() {
    let mut g = graph(4, &[(0, 2), (1, 4)]);
    add(&mut g, rel(0, 2, None));
    add(&mut g, rel(1, 2, Some(3)));
    add(&mut g, rel(2, 3, None));
    assert_eq!(level(&mut g, 2), Some(3));
    assert_eq!(from(&mut g, 2), Some(n(1)));
    assert_eq!(level(&mut g, 3), Some(3));
    remove(&mut g, rel(1, 2, Some(3)));
    assert_eq!(level(&mut g, 2), Some(2));
    assert_eq!(from(&mut g, 2), Some(n(0)));
    assert_eq!(level(&mut g, 3), Some(2));
}

#[test]
fn a_cycle_does_not_hold_a_level_up() {
    let mut g = graph(4, &[(0, 2)]);
    add(&mut g, rel(0, 1, None));
    add(&mut g, rel(1, 2, None));
    add(&mut g, rel(2, 3, None));
    add(&mut g, rel(3, 1, None));
    assert_eq!(level(&mut g, 3), Some(2));
    // Lowering the source lowers the whole cycle.
    set(&mut g, 0, NodeLevel::declared(lv(1)));
    assert_eq!(
        (level(&mut g, 1), level(&mut g, 2), level(&mut g, 3)),
        (Some(1), Some(1), Some(1))
    );
    // Removing the way in leaves the cycle without a level.
    remove(&mut g, rel(0, 1, None));
    assert_eq!(
        (level(&mut g, 1), level(&mut g, 2), level(&mut g, 3)),
        (None, None, None)
    );
    assert_eq!(from(&mut g, 1), None);
}

#[test]
fn declared_nodes_never_change() {
    let mut g = graph(3, &[(0, 4), (1, 1)]);
    add(&mut g, rel(0, 1, None));
    add(&mut g, rel(0, 2, None));
    assert_eq!(level(&mut g, 1), Some(1));
    assert_eq!(from(&mut g, 1), None);
    // Back to inherited: it takes its source's level.
    set(&mut g, 1, NodeLevel::default());
    assert_eq!(level(&mut g, 1), Some(4));
    assert_eq!(from(&mut g, 1), Some(n(0)));
}

#[test]
fn deleting_the_source_object_decays_what_it_gave() {
    let mut g = graph(3, &[(0, 2)]);
    add(&mut g, rel(0, 1, None));
    add(&mut g, rel(1, 2, None));
    g.remove_node(&n(0));
    update(
        &mut g,
        &Changes {
            nodes: vec![n(0)],
            ..Changes::default()
        },
    )
    .expect("infallible");
    assert_eq!((level(&mut g, 1), level(&mut g, 2)), (None, None));
    // A re-created node takes what its in-edges give.
    g.add_node(n(0), NodeLevel::default());
    g.add_node(n(2), NodeLevel::declared(lv(3)));
    add(&mut g, rel(2, 0, None));
    assert_eq!(level(&mut g, 0), Some(3));
    assert_eq!(level(&mut g, 1), Some(3));
}

#[test]
fn parallel_edges_of_two_records_stay_apart() {
    // An A record (no cap) and a PTR record (cap 1) from the same address to the same hostname.
    let mut g = graph(2, &[(1, 3)]);
    let a = ObjectRef {
        object_type: ObjectType::DnsARecord,
        key: NaturalKey::from_parts(["a"]),
    };
    let p = ObjectRef {
        object_type: ObjectType::DnsPtrRecord,
        key: NaturalKey::from_parts(["p"]),
    };
    let ra = rel(1, 0, None);
    let rp = rel(1, 0, Some(1));
    g.add_record_edge(&a, &ra);
    g.add_record_edge(&p, &rp);
    update(
        &mut g,
        &Changes {
            added: vec![ra.clone(), rp],
            ..Changes::default()
        },
    )
    .expect("infallible");
    assert_eq!(level(&mut g, 0), Some(3));
    g.remove_record_edge(&a, &ra);
    update(
        &mut g,
        &Changes {
            removed: vec![ra],
            ..Changes::default()
        },
    )
    .expect("infallible");
    assert_eq!(level(&mut g, 0), Some(1));
}

/// Check that every inherited level has a valid source and the sources form a forest rooted at
/// declared nodes.
fn check_sources(g: &mut MemoryGraph) -> std::result::Result<(), String> {
    let nodes: Vec<(ObjectRef, NodeLevel)> =
        g.nodes().map(|(k, v)| (k.clone(), v.clone())).collect();
    let map: HashMap<ObjectRef, NodeLevel> = nodes.iter().cloned().collect();
    for (k, v) in &nodes {
        if v.declared {
            continue;
        }
        match (&v.level, &v.inherited_from) {
            (None, None) => {}
            (Some(l), Some(src)) => {
                let sl = map.get(src).and_then(|s| s.level);
                let tight = g
                    .edges()
                    .in_edges(k)
                    .iter()
                    .any(|(s, cap)| s == src && contribution(sl, *cap) == Some(*l));
                if !tight {
                    return Err(format!("{k:?} names {src:?}, which does not give {l}"));
                }
                let mut seen = HashSet::new();
                let mut at = src.clone();
                loop {
                    if !seen.insert(at.clone()) {
                        return Err(format!("the sources of {k:?} go round in a cycle"));
                    }
                    match map.get(&at) {
                        Some(s) if s.declared => break,
                        Some(s) => match &s.inherited_from {
                            Some(next) => at = next.clone(),
                            None => return Err(format!("the chain of {k:?} ends at {at:?}")),
                        },
                        None => return Err(format!("the chain of {k:?} reaches a missing {at:?}")),
                    }
                }
            }
            other => return Err(format!("{k:?} has level and source {other:?}")),
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    AddEdge(usize, usize, Option<u8>, u8),
    RemoveEdge(usize),
    Declare(usize, Option<u8>),
    Inherit(usize),
    Delete(usize),
    Create(usize),
}

const NODES: usize = 7;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..NODES, 0..NODES, prop::option::of(0u8..=4), 0u8..3)
            .prop_map(|(s, t, c, r)| Op::AddEdge(s, t, c, r)),
        2 => (0usize..64).prop_map(Op::RemoveEdge),
        2 => (0..NODES, prop::option::of(0u8..=4)).prop_map(|(i, l)| Op::Declare(i, l)),
        1 => (0..NODES).prop_map(Op::Inherit),
        1 => (0..NODES).prop_map(Op::Delete),
        1 => (0..NODES).prop_map(Op::Create),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// After every write, the incremental result has the levels a full recomputation gives, and
    /// every inherited level names a source that gives it, in a forest rooted at declared nodes.
    #[test]
    fn incremental_equals_recomputation(ops in prop::collection::vec(op(), 1..40)) {
        let mut g = graph(NODES, &[]);
        let mut edges: Vec<(ObjectRef, Relation)> = Vec::new();
        for op in ops {
            let mut changes = Changes::default();
            match op {
                Op::AddEdge(s, t, cap, r) => {
                    if s == t { continue; }
                    let record = ObjectRef {
                        object_type: ObjectType::DnsARecord,
                        key: NaturalKey::from_parts([format!("r{r}-{cap:?}")]),
                    };
                    let e = rel(s, t, cap);
                    if g.add_record_edge(&record, &e) {
                        edges.push((record, e.clone()));
                        changes.added.push(e);
                    }
                }
                Op::RemoveEdge(i) => {
                    if edges.is_empty() { continue; }
                    let (record, e) = edges.remove(i % edges.len());
                    g.remove_record_edge(&record, &e);
                    changes.removed.push(e);
                }
                Op::Declare(i, l) => {
                    if g.node(&n(i)).expect("infallible").is_none() { continue; }
                    g.add_node(n(i), NodeLevel::declared(l.and_then(lv)));
                    changes.nodes.push(n(i));
                }
                Op::Inherit(i) => {
                    if g.node(&n(i)).expect("infallible").is_none() { continue; }
                    g.add_node(n(i), NodeLevel::default());
                    changes.nodes.push(n(i));
                }
                Op::Delete(i) => {
                    g.remove_node(&n(i));
                    changes.nodes.push(n(i));
                }
                Op::Create(i) => {
                    if g.node(&n(i)).expect("infallible").is_some() { continue; }
                    g.add_node(n(i), NodeLevel::default());
                    changes.nodes.push(n(i));
                }
            }
            update(&mut g, &changes).expect("infallible");
            let mut full = g.clone();
            let all: Vec<ObjectRef> = full.nodes().map(|(k, _)| k.clone()).collect();
            recompute(&mut full, all).expect("infallible");
            // The integer-id recomputation gives exactly what the generic one gives, sources included.
            let listed: Vec<(ObjectRef, NodeLevel)> =
                g.nodes().map(|(k, v)| (k.clone(), v.clone())).collect();
            let rels: Vec<Relation> = edges.iter().map(|(_, e)| e.clone()).collect();
            let mut compact = g.clone();
            for (k, v) in recompute_all(listed, rels) {
                compact.add_node(k, v);
            }
            for i in 0..NODES {
                let (a, b) = (full.node(&n(i)).expect("infallible"), compact.node(&n(i)).expect("infallible"));
                prop_assert_eq!(a, b, "node {} (generic vs integer ids)", i);
            }
            for i in 0..NODES {
                prop_assert_eq!(level(&mut g, i), level(&mut full, i), "node {} after {:?}", i, changes);
            }
            if let Err(e) = check_sources(&mut g) {
                prop_assert!(false, "{}", e);
            }
            if let Err(e) = check_sources(&mut full) {
                prop_assert!(false, "full: {}", e);
            }
        }
    }
}
