//! Evaluating rules and keeping their findings: a full pass over an organization, or an incremental
//! one over the subjects a write affected.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use tracing::debug;

use super::condition::{Needs, Scope, Snapshot, other_field, relation_target};
use super::{Rule, RuleCatalog, RuleSet};
use crate::object::{Finding, HostnameRef, IpRef, NaturalKey, Object, ObjectType, escape_part};
use crate::org::OrgCode;
use crate::store::{FindingRules, ObjectQuery, ObjectStore};
use crate::task::{ObjectRef, Task, TaskState};
use crate::{Error, Result};

/// Findings written per store call.
const CHUNK: usize = 2000;
/// Values per filtered query.
const VALUES_PER_QUERY: usize = 2000;

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassReport {
    /// Subjects (hostnames and addresses) evaluated.
    pub subjects: usize,
    /// Findings created by a rule.
    pub created: usize,
    /// Findings whose list of asserting rules changed.
    pub updated: usize,
    /// Findings deleted because their last rule retracted them.
    pub deleted: usize,
}

/// Evaluates a [`RuleSet`] over an [`ObjectStore`] and keeps the rules' findings. Passes are
/// serialised: one at a time per runner.
#[derive(Debug)]
pub struct RuleRunner {
    rules: Arc<RuleSet>,
    objects: Arc<dyn ObjectStore>,
    catalog: Arc<dyn RuleCatalog>,
    lock: tokio::sync::Mutex<()>,
}

fn subject_object(r: &ObjectRef) -> Option<Object> {
    match r.object_type {
        ObjectType::Hostname => HostnameRef::parse(r.key.as_str())
            .ok()
            .map(Object::Hostname),
        ObjectType::IpAddress => IpRef::parse(r.key.as_str()).ok().map(Object::IpAddress),
        _ => None,
    }
}

fn finding_for(rule: &Rule, subject: &Object) -> Option<Finding> {
    let (hostname, address) = match subject {
        Object::Hostname(h) => (Some(h.clone()), None),
        Object::IpAddress(a) => (None, Some(a.clone())),
        _ => return None,
    };
    Some(Finding {
        finding_type: rule.finding_type.clone(),
        hostname,
        address,
        description: None,
        source_rules: Vec::new(),
        rule_only: true,
    })
}

/// The key of `rule`'s finding on the subject `r` (`o`): [`Object::natural_key`] of
/// [`finding_for`]'s finding, from the subject's key and the finding type's escaped code
/// (`code_part`) without building the finding.
fn finding_key(code_part: &str, rule: &Rule, r: &ObjectRef, o: &Object) -> Option<NaturalKey> {
    let key = match r.object_type {
        ObjectType::Hostname => NaturalKey::from_escaped_components([code_part, r.key.as_str()]),
        ObjectType::IpAddress => {
            NaturalKey::from_escaped_components([code_part, "", r.key.as_str()])
        }
        _ => return None,
    };
    debug_assert_eq!(
        Some(&key),
        finding_for(rule, o)
            .map(|f| Object::Finding(f).natural_key())
            .as_ref()
    );
    Some(key)
}

fn subject_ref(o: &Object) -> Option<ObjectRef> {
    matches!(o, Object::Hostname(_) | Object::IpAddress(_)).then(|| ObjectRef {
        object_type: o.object_type(),
        key: o.natural_key(),
    })
}

impl RuleRunner {
    /// A runner of `rules` over `objects`, with enablement and `requires` records in `catalog`.
    pub fn new(
        rules: Arc<RuleSet>,
        objects: Arc<dyn ObjectStore>,
        catalog: Arc<dyn RuleCatalog>,
    ) -> Self {
        RuleRunner {
            rules,
            objects,
            catalog,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// A full pass over every hostname and address of `org`.
    ///
    /// Timings of its phases are logged at debug level.
    ///
    /// # Errors
    /// The store's errors.
    pub async fn run_org(&self, org: &OrgCode) -> Result<PassReport> {
        self.pass(org, None).await
    }

    /// Enable or disable a rule for `org` (`None`: back to the file's default), then bring its
    /// findings up to date with a full pass.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown rule; the store's errors.
    pub async fn set_enabled(
        &self,
        org: &OrgCode,
        rule: &str,
        enabled: Option<bool>,
    ) -> Result<PassReport> {
        if self.rules.get(rule).is_none() {
            return Err(Error::not_found("rule", rule));
        }
        self.catalog.set_rule_override(org, rule, enabled).await?;
        self.pass(org, None).await
    }

    /// A task ended: when it completed, record its targets as processed by its plugin and
    /// evaluate them again (a rule that `requires` the plugin may apply now).
    ///
    /// # Errors
    /// The store's errors.
    pub async fn task_ended(&self, task: &Task) -> Result<PassReport> {
        if task.state != TaskState::Completed || task.input.objects.is_empty() {
            return Ok(PassReport::default());
        }
        self.catalog
            .mark_processed(&task.org, &task.plugin_id, &task.input.objects)
            .await?;
        if !self
            .rules
            .iter()
            .any(|r| r.requires.contains(&task.plugin_id))
        {
            return Ok(PassReport::default());
        }
        let subjects: BTreeSet<ObjectRef> = task
            .input
            .objects
            .iter()
            .filter(|r| matches!(r.object_type, ObjectType::Hostname | ObjectType::IpAddress))
            .cloned()
            .collect();
        if subjects.is_empty() {
            return Ok(PassReport::default());
        }
        self.pass(&task.org, Some(subjects)).await
    }

    /// Objects were written or deleted (`objects`: their data): evaluate the subjects they affect.
    /// A hostname or address affects itself; any object affects the hostnames and addresses it
    /// refers to (a record's owner and target, a port's address, a finding's subject); through a
    /// rule's `target`, the subjects whose records point at an affected one (an AAAA record of a
    /// name server affects the hostnames it serves); through `self_or_parents`, a record that
    /// matches the relation affects the subdomains of its owner.
    ///
    /// # Errors
    /// The store's errors.
    pub async fn objects_written(&self, org: &OrgCode, objects: &[Object]) -> Result<PassReport> {
        if self.rules.is_empty() || objects.is_empty() {
            return Ok(PassReport::default());
        }
        let mut subjects: BTreeSet<ObjectRef> = BTreeSet::new();
        for o in objects {
            subjects.extend(subject_ref(o));
            subjects.extend(o.references().iter().filter_map(subject_ref));
        }
        // Relations with a target: a written object of a type the target condition looks at (an
        // AAAA record of a name server) affects the far end it belongs to, and so the subjects whose
        // records point at that far end (the hostnames the name server serves). Other writes that
        // merely refer to a far end (a new NS record) affect their own owner, found above.
        let mut parents: Vec<&super::condition::Has> = Vec::new();
        for r in self.rules.iter() {
            for h in r.condition.relations() {
                if h.scope == Scope::SelfOrParents {
                    parents.push(h);
                }
                let (Some(t), Some(f)) = (&h.target, other_field(h.object_type, h.via)) else {
                    continue;
                };
                let far_keys: BTreeSet<String> = t
                    .relations()
                    .iter()
                    .flat_map(|inner| {
                        objects
                            .iter()
                            .filter(move |o| o.object_type() == inner.object_type)
                            .filter_map(move |o| o.field(inner.via))
                    })
                    .map(|v| v.filter_text())
                    .collect();
                if far_keys.is_empty() {
                    continue;
                }
                let keys: Vec<String> = far_keys.into_iter().collect();
                for o in self.related(org, h.object_type, f, &keys).await? {
                    if let Some(v) = o.field(h.via)
                        && let Some(outer_ty) = relation_target(h.object_type, h.via)
                    {
                        subjects.insert(ObjectRef {
                            object_type: outer_ty,
                            key: NaturalKey::from_escaped_components([v.filter_text()]),
                        });
                    }
                }
            }
        }
        // Subdomains of owners of records that parent-scoped relations match.
        for h in parents {
            for o in objects {
                if o.object_type() != h.object_type
                    || !h
                        .filter
                        .iter()
                        .all(|(f, p)| p.matches(o.field(f).map(|v| v.filter_text()).as_deref()))
                {
                    continue;
                }
                let Some(Object::Hostname(owner)) = o.field(h.via).and_then(|v| {
                    HostnameRef::parse(&v.filter_text())
                        .ok()
                        .map(Object::Hostname)
                }) else {
                    continue;
                };
                let suffix = format!(".{}", owner.name);
                let mut q = ObjectQuery::new(org.clone(), ObjectType::Hostname);
                q.search = Some(suffix.clone());
                q.limit = 0;
                for s in self.objects.query(&q).await?.items {
                    if let Object::Hostname(c) = &s.object
                        && c.network == owner.network
                        && c.name.ends_with(&suffix)
                    {
                        subjects.insert(ObjectRef {
                            object_type: ObjectType::Hostname,
                            key: s.key.clone(),
                        });
                    }
                }
            }
        }
        self.pass(org, Some(subjects)).await
    }

    /// Objects of `ty` whose `field` is one of `keys`.
    async fn related(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        field: &str,
        keys: &[String],
    ) -> Result<Vec<Object>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(VALUES_PER_QUERY) {
            let mut q = ObjectQuery::new(org.clone(), ty);
            q.filters.push((field.to_string(), chunk.to_vec()));
            q.limit = 0;
            out.extend(
                self.objects
                    .query(&q)
                    .await?
                    .items
                    .into_iter()
                    .map(|s| s.object),
            );
        }
        Ok(out)
    }

    /// The objects of `ty` with these keys (those that exist), read in batches.
    async fn by_keys(
        &self,
        org: &OrgCode,
        ty: ObjectType,
        keys: &[NaturalKey],
    ) -> Result<Vec<crate::store::StoredObject>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(VALUES_PER_QUERY) {
            let mut q = ObjectQuery::new(org.clone(), ty);
            q.keys = Some(chunk.to_vec());
            q.limit = 0;
            out.extend(self.objects.query(&q).await?.items);
        }
        Ok(out)
    }

    async fn all_of(
        &self,
        org: &OrgCode,
        ty: ObjectType,
    ) -> Result<Vec<crate::store::StoredObject>> {
        let mut q = ObjectQuery::new(org.clone(), ty);
        q.limit = 0;
        Ok(self.objects.query(&q).await?.items)
    }

    /// The subjects of a pass that exist (all of the organization's when `only` is `None`) and
    /// those that are gone, as objects, and of each plugin an enabled rule requires, the subjects
    /// it processed.
    #[allow(clippy::type_complexity)]
    async fn subjects(
        &self,
        org: &OrgCode,
        enabled: &[&Rule],
        subject_types: &BTreeSet<ObjectType>,
        only: Option<&BTreeSet<ObjectRef>>,
    ) -> Result<(
        Vec<(ObjectRef, Object)>,
        Vec<(ObjectRef, Object)>,
        HashMap<String, HashSet<ObjectRef>>,
    )> {
        let mut subjects: Vec<(ObjectRef, Object)> = Vec::new();
        let mut gone: Vec<(ObjectRef, Object)> = Vec::new();
        match only {
            None => {
                // A hostname or an address is its key: read the keys alone, decoding nothing.
                for &ty in subject_types {
                    let mut q = ObjectQuery::new(org.clone(), ty);
                    q.limit = 0;
                    for key in self.objects.query_keys(&q).await? {
                        let r = ObjectRef {
                            object_type: ty,
                            key,
                        };
                        if let Some(o) = subject_object(&r) {
                            subjects.push((r, o));
                        }
                    }
                }
            }
            Some(refs) => {
                for &ty in subject_types {
                    let keys: Vec<NaturalKey> = refs
                        .iter()
                        .filter(|r| r.object_type == ty)
                        .map(|r| r.key.clone())
                        .collect();
                    let mut found: HashMap<NaturalKey, Object> = self
                        .by_keys(org, ty, &keys)
                        .await?
                        .into_iter()
                        .map(|s| (s.key, s.object))
                        .collect();
                    for k in keys {
                        let r = ObjectRef {
                            object_type: ty,
                            key: k.clone(),
                        };
                        match found.remove(&k) {
                            Some(o) => subjects.push((r, o)),
                            None => {
                                if let Some(o) = subject_object(&r) {
                                    gone.push((r, o));
                                }
                            }
                        }
                    }
                }
            }
        }
        // What `requires` needs: the processed subjects of each required plugin.
        let mut processed: HashMap<String, HashSet<ObjectRef>> = HashMap::new();
        let wanted_plugins: BTreeSet<&str> = enabled
            .iter()
            .flat_map(|r| r.requires.iter().map(String::as_str))
            .collect();
        let refs: Vec<ObjectRef> = subjects.iter().map(|(r, _)| r.clone()).collect();
        for p in wanted_plugins {
            let among = if only.is_none() {
                None
            } else {
                Some(refs.as_slice())
            };
            let set = self.catalog.processed(org, p, among).await?;
            processed.insert(p.to_string(), set.into_iter().collect());
        }
        Ok((subjects, gone, processed))
    }

    /// Evaluate every rule on `subjects` (all of the organization's when `None`) and write the
    /// difference to the findings.
    async fn pass(&self, org: &OrgCode, only: Option<BTreeSet<ObjectRef>>) -> Result<PassReport> {
        let _one = self.lock.lock().await;
        let started = std::time::Instant::now();
        let mut report = PassReport::default();
        if self.rules.is_empty() {
            return Ok(report);
        }
        let overrides = self.catalog.rule_overrides(org).await?;
        let enabled: Vec<&Rule> = self.rules.enabled_for(&overrides);
        let subject_types: BTreeSet<ObjectType> =
            self.rules.iter().map(|r| r.object_type).collect();

        let full = only.is_none();
        // A full pass reads three independent things at once (the store answers each on its own
        // thread): the subjects and what `requires` needs, every related object, and the rules'
        // part of every rule finding.
        let codes: Vec<String> = self
            .rules
            .iter()
            .map(|r| r.finding_type.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Each read's end, for the log: `findings_read` (a full pass), `evaluated`.
        let finding_rules = async {
            if full {
                let rules = self.objects.finding_rules(org, &codes).await;
                (rules.map(Some), Some(started.elapsed()))
            } else {
                (Ok(None), None)
            }
        };
        let related_all = async {
            let mut out: Vec<(ObjectType, BTreeSet<&'static str>, Vec<Object>)> = Vec::new();
            if !full {
                return Ok(out);
            }
            let mut by_type: BTreeMap<ObjectType, BTreeSet<&'static str>> = BTreeMap::new();
            for r in &enabled {
                for h in r.condition.relations() {
                    by_type.entry(h.object_type).or_default().insert(h.via);
                }
            }
            for (ty, vias) in by_type {
                let objects: Vec<Object> = self
                    .all_of(org, ty)
                    .await?
                    .into_iter()
                    .map(|s| s.object)
                    .collect();
                out.push((ty, vias, objects));
            }
            Ok::<_, Error>(out)
        };
        let subjects_read = self.subjects(org, &enabled, &subject_types, only.as_ref());
        // Evaluating needs the subjects and the related objects, not the findings: it runs while
        // the store is still reading those.
        let evaluate = async {
            let (related_all, subjects_read) = futures::join!(related_all, subjects_read);
            let (subjects, gone, processed) = subjects_read?;
            // The related objects: all of each type a rule looks at (full pass), or loaded on
            // demand.
            let mut snap = Snapshot::default();
            for (ty, vias, objects) in related_all? {
                for via in vias {
                    snap.load_all(ty, via, &objects);
                }
            }
            let holds = self
                .evaluate(org, &enabled, &subjects, &processed, &mut snap)
                .await?;
            Ok::<_, Error>((subjects, gone, holds, started.elapsed()))
        };
        let ((finding_rules, findings_read), evaluated) = futures::join!(finding_rules, evaluate);
        let (subjects, gone, holds, evaluated) = evaluated?;
        report.subjects = subjects.len() + gone.len();

        // Which rules want which finding. A finding's key is its type's escaped code and its
        // subject's key (`finding_key`), so a stored finding is matched to its subject and the
        // rules of its type by splitting its key, without keying every finding the rules want.
        let wants = Wants::new(&self.rules, &enabled, &subjects, &gone, holds);

        // The findings there are: their rules' part (a full pass reads no more of each), and in an
        // incremental pass the whole finding, read by the keys of every finding a rule could
        // assert on its subjects.
        let existing: Box<dyn Iterator<Item = (FindingRules, Option<Finding>)> + Send> =
            if let Some(rules) = finding_rules? {
                Box::new(rules.into_iter().map(|r| (r, None)))
            } else {
                let stored = self
                    .by_keys(org, ObjectType::Finding, &wants.every_key())
                    .await?;
                Box::new(stored.into_iter().filter_map(|s| match s.object {
                    Object::Finding(f) => {
                        let r = FindingRules {
                            key: s.key,
                            source_rules: f.source_rules.clone(),
                            rule_only: f.rule_only,
                        };
                        Some((r, Some(f)))
                    }
                    _ => None,
                }))
            };

        // Both reads are in: what follows is the difference and the writes.
        let read = started.elapsed();
        // The difference.
        let mut seen = vec![false; wants.slots()];
        let mut want: Vec<&str> = Vec::new();
        let mut add: Vec<Object> = Vec::new();
        let mut replace: Vec<(NaturalKey, BTreeSet<String>, Option<Finding>)> = Vec::new();
        let mut delete: Vec<NaturalKey> = Vec::new();
        for (s, f) in existing {
            want.clear();
            let wanted_finding = match wants.of_key(s.key.as_str()) {
                Some(slot) => {
                    seen[slot.index] = true;
                    wants.names(&slot, &mut want);
                    wants.finding(&slot)
                }
                // A full pass sees every rule finding: one of a subject that is gone, or of a type
                // no rule of this subject's type asserts, has no rule that wants it.
                None if full => None,
                None => continue,
            };
            if same_names(&s.source_rules, &want) {
                continue;
            }
            let want: BTreeSet<String> = want.iter().map(|n| (*n).to_string()).collect();
            let have: BTreeSet<String> = s.source_rules.into_iter().collect();
            if want.is_empty() && s.rule_only {
                delete.push(s.key);
            } else if want.is_superset(&have) {
                // Merged into the stored finding by key: only its type and subject matter here
                // (`want` is not empty, so the rules wanted it and `wanted_finding` is there).
                if let Some(mut n) = f.or(wanted_finding) {
                    n.source_rules = want.into_iter().collect();
                    n.rule_only = true; // merged: stays what it was
                    n.description = None;
                    add.push(Object::Finding(n));
                }
            } else {
                replace.push((s.key, want, f));
            }
            report.updated += 1;
        }
        // A replace keeps the rest of the stored finding: read the ones a full pass did not.
        let unread: Vec<NaturalKey> = replace
            .iter()
            .filter(|(_, _, f)| f.is_none())
            .map(|(k, _, _)| k.clone())
            .collect();
        let mut read_now: HashMap<NaturalKey, Finding> = self
            .by_keys(org, ObjectType::Finding, &unread)
            .await?
            .into_iter()
            .filter_map(|s| match s.object {
                Object::Finding(f) => Some((s.key, f)),
                _ => None,
            })
            .collect();
        // A finding no rule wants any more that a task wrote stays. When its subject is gone it is
        // not written either: writing an object writes the objects it refers to, and that would
        // bring back the subject someone deleted. (A subject deleted after this check, while the
        // pass writes, can still come back: the store's write does not look.)
        let mut replaced: Vec<Object> = Vec::new();
        for (k, want, f) in replace {
            let Some(mut n) = f.or_else(|| read_now.remove(&k)) else {
                // Deleted since the pass read it: nothing to update.
                report.updated -= 1;
                continue;
            };
            if want.is_empty() && !self.subject_exists(org, &n).await? {
                report.updated -= 1;
                continue;
            }
            n.source_rules = want.into_iter().collect();
            replaced.push(Object::Finding(n));
        }
        // The findings the rules want that are not there yet.
        for slot in wants.unseen(&seen) {
            want.clear();
            wants.names(&slot, &mut want);
            if want.is_empty() {
                continue;
            }
            let Some(mut f) = wants.finding(&slot) else {
                continue;
            };
            f.source_rules = want.iter().map(|n| (*n).to_string()).collect();
            add.push(Object::Finding(f));
            report.created += 1;
        }
        report.updated -= delete.len();
        report.deleted = delete.len();
        for chunk in add.chunks(CHUNK) {
            self.objects.upsert(org, chunk.to_vec(), None).await?;
        }
        for o in replaced {
            match self.objects.replace(org, o, None).await {
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for chunk in delete.chunks(CHUNK) {
            self.objects.delete(org, ObjectType::Finding, chunk).await?;
        }
        debug!(org = %org, ?report, full, ?evaluated, ?findings_read, ?read, total = ?started.elapsed(), "business rules evaluated");
        Ok(report)
    }

    /// Whether the subject of finding `f` is stored.
    async fn subject_exists(&self, org: &OrgCode, f: &Finding) -> Result<bool> {
        let subject = match (&f.hostname, &f.address) {
            (Some(h), None) => (ObjectType::Hostname, h.key()),
            (None, Some(a)) => (ObjectType::IpAddress, a.key()),
            // Not a finding a rule asserts (no subject, or both): nothing is brought back.
            _ => return Ok(true),
        };
        Ok(self
            .objects
            .get(org, subject.0, &subject.1)
            .await?
            .is_some())
    }

    /// Whether each enabled rule holds on each subject (`holds[i * enabled.len() + j]`), reading
    /// what the conditions need that `snap` lacks until nothing is missing.
    async fn evaluate(
        &self,
        org: &OrgCode,
        enabled: &[&Rule],
        subjects: &[(ObjectRef, Object)],
        processed: &HashMap<String, HashSet<ObjectRef>>,
        snap: &mut Snapshot,
    ) -> Result<Vec<Option<bool>>> {
        // One slot per subject and enabled rule.
        let n = enabled.len();
        let mut holds: Vec<Option<bool>> = vec![None; subjects.len() * n];
        loop {
            let mut needs = Needs::default();
            for (i, (r, o)) in subjects.iter().enumerate() {
                for (j, rule) in enabled.iter().enumerate() {
                    let slot = i * n + j;
                    if rule.object_type != r.object_type {
                        holds[slot] = Some(false);
                        continue;
                    }
                    if holds[slot].is_some() {
                        continue;
                    }
                    if !rule
                        .requires
                        .iter()
                        .all(|p| processed.get(p.as_str()).is_some_and(|s| s.contains(r)))
                    {
                        holds[slot] = Some(false);
                        continue;
                    }
                    holds[slot] = rule.condition.eval(o, &r.key, snap, &mut needs);
                }
            }
            if needs.is_empty() {
                return Ok(holds);
            }
            let mut groups: BTreeMap<(ObjectType, &'static str), Vec<String>> = BTreeMap::new();
            for (ty, via, key) in needs.related {
                groups.entry((ty, via)).or_default().push(key);
            }
            for ((ty, via), keys) in groups {
                let found = self.related(org, ty, via, &keys).await?;
                snap.load_some(ty, via, &keys, found);
            }
            let mut groups: BTreeMap<(ObjectType, &'static str), Vec<String>> = BTreeMap::new();
            for (ty, via, key) in needs.counts {
                groups.entry((ty, via)).or_default().push(key);
            }
            for ((ty, via), keys) in groups {
                let at_most = enabled
                    .iter()
                    .flat_map(|r| r.condition.relations())
                    .filter(|h| h.object_type == ty && h.via == via && h.is_plain())
                    .map(|h| h.at_least as usize)
                    .max()
                    .unwrap_or(1);
                let counts = self
                    .objects
                    .count_matching(org, ty, via, &keys, at_most)
                    .await?;
                snap.load_counts(ty, via, &keys, &counts);
            }
        }
    }
}

/// A finding the rules of a pass could assert: on subject `subject` (the pass's subjects, then
/// the gone ones), of finding type `code`; `index` is its place in a pass's `seen` list.
#[derive(Debug, Clone, Copy)]
struct Slot {
    index: usize,
    subject: usize,
    code: usize,
}

/// Which enabled rules hold on which subject, by finding type: what a pass compares the stored
/// findings with. A stored finding is found by its key, which is its type's escaped code and its
/// subject's key ([`finding_key`]), so nothing is keyed per wanted finding.
struct Wants<'a> {
    /// Every rule, enabled or not, and where each is among the enabled ones (`holds`' columns).
    rules: Vec<&'a Rule>,
    enabled_at: Vec<Option<usize>>,
    enabled: usize,
    /// The finding types' escaped codes, sorted, each with the rules (indices into `rules`)
    /// asserting it.
    code_parts: Vec<String>,
    rules_of: Vec<Vec<usize>>,
    /// The subjects, then the gone ones (whose findings no rule wants any more).
    subjects: Vec<&'a (ObjectRef, Object)>,
    live: usize,
    hostnames: HashMap<&'a str, usize>,
    addresses: HashMap<&'a str, usize>,
    holds: Vec<Option<bool>>,
}

impl<'a> Wants<'a> {
    fn new(
        rules: &'a RuleSet,
        enabled: &[&'a Rule],
        subjects: &'a [(ObjectRef, Object)],
        gone: &'a [(ObjectRef, Object)],
        holds: Vec<Option<bool>>,
    ) -> Wants<'a> {
        let rules: Vec<&Rule> = rules.iter().collect();
        let enabled_at = rules
            .iter()
            .map(|r| enabled.iter().position(|e| e.name == r.name))
            .collect();
        let code_parts: Vec<String> = rules
            .iter()
            .map(|r| escape_part(&r.finding_type))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut rules_of = vec![Vec::new(); code_parts.len()];
        for (a, r) in rules.iter().enumerate() {
            if let Ok(c) = code_parts.binary_search(&escape_part(&r.finding_type)) {
                rules_of[c].push(a);
            }
        }
        let all: Vec<&(ObjectRef, Object)> = subjects.iter().chain(gone).collect();
        // `of_key` tells an address's finding by the empty part before the address.
        debug_assert!(all.iter().all(|(r, _)| !r.key.as_str().starts_with('|')));
        let mut hostnames = HashMap::new();
        let mut addresses = HashMap::new();
        for (i, (r, _)) in all.iter().enumerate() {
            match r.object_type {
                ObjectType::Hostname => hostnames.insert(r.key.as_str(), i),
                ObjectType::IpAddress => addresses.insert(r.key.as_str(), i),
                _ => None,
            };
        }
        Wants {
            rules,
            enabled_at,
            enabled: enabled.len(),
            code_parts,
            rules_of,
            subjects: all,
            live: subjects.len(),
            hostnames,
            addresses,
            holds,
        }
    }

    /// The length of a `seen` list: one place per subject and finding type.
    fn slots(&self) -> usize {
        self.subjects.len() * self.code_parts.len()
    }

    fn slot(&self, subject: usize, code: usize) -> Slot {
        Slot {
            index: subject * self.code_parts.len() + code,
            subject,
            code,
        }
    }

    /// Whether a rule of finding type `code` has subjects of type `ty`.
    fn applies(&self, code: usize, ty: ObjectType) -> bool {
        self.rules_of[code]
            .iter()
            .any(|&a| self.rules[a].object_type == ty)
    }

    /// The finding `key` names, when it is one a rule could assert on a subject of this pass.
    fn of_key(&self, key: &str) -> Option<Slot> {
        let (code_part, subject) = key.split_once('|')?;
        let code = self
            .code_parts
            .binary_search_by(|p| p.as_str().cmp(code_part))
            .ok()?;
        // An address's finding has an empty part before the address (a network is never empty).
        let &i = match subject.strip_prefix('|') {
            Some(address) => self.addresses.get(address)?,
            None => self.hostnames.get(subject)?,
        };
        self.applies(code, self.subjects[i].0.object_type)
            .then(|| self.slot(i, code))
    }

    /// The names of the enabled rules that hold and assert `slot`'s finding, sorted, into `out`.
    fn names(&self, slot: &Slot, out: &mut Vec<&'a str>) {
        if slot.subject >= self.live {
            return;
        }
        let ty = self.subjects[slot.subject].0.object_type;
        for &a in &self.rules_of[slot.code] {
            let rule = self.rules[a];
            let holds = self.enabled_at[a]
                .is_some_and(|j| self.holds[slot.subject * self.enabled + j] == Some(true));
            if rule.object_type == ty && holds {
                out.push(rule.name.as_str());
            }
        }
        out.sort_unstable();
        out.dedup();
    }

    /// `slot`'s finding, as a rule would write it (without its rules).
    fn finding(&self, slot: &Slot) -> Option<Finding> {
        let &a = self.rules_of[slot.code].first()?;
        finding_for(self.rules[a], &self.subjects[slot.subject].1)
    }

    /// The findings on the pass's (existing) subjects not marked in `seen`.
    fn unseen<'s>(&'s self, seen: &'s [bool]) -> impl Iterator<Item = Slot> + 's {
        (0..self.live).flat_map(move |i| {
            let ty = self.subjects[i].0.object_type;
            (0..self.code_parts.len())
                .map(move |c| self.slot(i, c))
                .filter(move |s| !seen[s.index] && self.applies(s.code, ty))
        })
    }

    /// The key of every finding a rule could assert on the pass's subjects, gone ones included.
    fn every_key(&self) -> Vec<NaturalKey> {
        let mut keys = Vec::new();
        for (r, o) in &self.subjects {
            for (c, part) in self.code_parts.iter().enumerate() {
                let Some(&a) = self.rules_of[c]
                    .iter()
                    .find(|&&a| self.rules[a].object_type == r.object_type)
                else {
                    continue;
                };
                keys.extend(finding_key(part, self.rules[a], r, o));
            }
        }
        keys
    }
}

/// Whether a stored finding's rules (`have`, possibly repeating one) are the rules `want`
/// (sorted, each once), as sets.
fn same_names(have: &[String], want: &[&str]) -> bool {
    have.iter().all(|h| want.binary_search(&h.as_str()).is_ok())
        && want.iter().all(|w| have.iter().any(|h| h == w))
}
