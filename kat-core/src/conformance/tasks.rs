//! The [`TaskStore`] conformance suite, one group of cases per trait: [`TaskQueue`]
//! ([`run_task_queue`]), [`ScheduleStore`] ([`run_schedule_store`]), [`OrgStore`]
//! ([`run_org_store`]), [`PluginCatalog`] ([`run_plugin_catalog`]), [`RevocationList`]
//! ([`run_revocation_list`]) and [`ReplicaRegistry`] ([`run_replica_registry`]); the lease cases
//! ([`run_leases`]) need a queue with its revocation list. A backend written one concern at a time runs the group of each trait
//! it implements; a whole [`TaskStore`] runs [`run_all`].
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use kat_core::conformance::tasks;
//! use kat_core::memory::MemoryTaskStore;
//! tasks::run_revocation_list(&MemoryTaskStore::default()).await.unwrap();
//! tasks::run_all(Arc::new(MemoryTaskStore::default())).await.unwrap();
//! # });
//! ```

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::object::{NaturalKey, ObjectType};
use crate::org::{OrgCode, Organization};
use crate::plugin::{PluginDef, PluginRecord};
use crate::schedule::{Interval, ObjectSet, ObjectSetId, Schedule, ScheduleId};
use crate::store::{
    OrgStore, PluginCatalog, ReplicaRegistry, RevocationList, ScheduleStore, TaskQuery, TaskQueue,
    TaskStore,
};
use crate::task::{Task, TaskInput, TaskPatch, TaskState};
use crate::{Error, Result};

fn org(s: &str) -> OrgCode {
    OrgCode::new(s).expect("valid org code")
}

fn task(o: &OrgCode, plugin: &str, created_ms: i64) -> Task {
    let mut t = Task::queued(o.clone(), plugin, TaskInput::default());
    t.created_at = Timestamp::from_millis(created_ms);
    t
}

/// Tasks are created all-or-none, read back, and listed newest first with filters and paging.
pub async fn create_get_list(store: &dyn TaskQueue) -> Result<()> {
    let o = org("t-list");
    let ts: Vec<Task> = (0..5)
        .map(|i| task(&o, if i % 2 == 0 { "dns" } else { "nmap" }, 1_000 + i))
        .collect();
    store.create_tasks(ts.clone()).await?;
    assert_eq!(store.get_task(ts[2].id).await?, Some(ts[2].clone()));
    assert!(store.get_task(crate::task::TaskId::new()).await?.is_none());
    // A batch with an existing id stores nothing.
    let fresh = task(&o, "dns", 9_999);
    let e = store
        .create_tasks(vec![fresh.clone(), ts[0].clone()])
        .await
        .expect_err("duplicate id");
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    assert!(store.get_task(fresh.id).await?.is_none(), "all or none");
    let mut q = TaskQuery {
        org: Some(o.clone()),
        ..TaskQuery::default()
    };
    let all = store.list_tasks(&q).await?;
    assert_eq!(all.count, 5);
    let created: Vec<i64> = all.items.iter().map(|t| t.created_at.as_millis()).collect();
    assert_eq!(created, vec![1004, 1003, 1002, 1001, 1000], "newest first");
    q.plugin_id = Some("dns".into());
    assert_eq!(store.list_tasks(&q).await?.count, 3);
    q.limit = 2;
    q.offset = 2;
    let p = store.list_tasks(&q).await?;
    assert_eq!((p.count, p.items.len()), (3, 1));
    let other = TaskQuery {
        org: Some(org("t-list-other")),
        ..TaskQuery::default()
    };
    assert_eq!(store.list_tasks(&other).await?.count, 0);
    Ok(())
}

/// State transitions only from the expected states; exactly one of many concurrent claims wins.
pub async fn transitions(store: Arc<dyn TaskQueue>) -> Result<()> {
    let o = org("t-trans");
    let t = task(&o, "dns", 1);
    store.create_tasks(vec![t.clone()]).await?;
    let mut handles = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let id = t.id;
        handles.push(tokio::spawn(async move {
            let mut p = TaskPatch::to(TaskState::Running);
            p.bump_attempts = true;
            p.started_at = Some(Timestamp::now());
            store.transition_task(id, &[TaskState::Queued], p).await
        }));
    }
    let mut wins = 0;
    for h in handles {
        match h
            .await
            .map_err(|e| Error::backend_source("test", e, false))?
        {
            Ok(t) => {
                wins += 1;
                assert_eq!(t.state, TaskState::Running);
            }
            Err(Error::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    assert_eq!(wins, 1, "exactly one worker claims a queued task");
    let got = store.get_task(t.id).await?.expect("task");
    assert_eq!((got.state, got.attempts), (TaskState::Running, 1));
    assert!(got.started_at.is_some());
    let mut done = TaskPatch::to(TaskState::Completed);
    done.exit_code = Some(0);
    done.ended_at = Some(Timestamp::now());
    done.reason = Some("exited 0".into());
    let t2 = store
        .transition_task(t.id, &[TaskState::Running], done)
        .await?;
    assert_eq!(
        (t2.state, t2.exit_code, t2.reason.as_deref()),
        (TaskState::Completed, Some(0), Some("exited 0"))
    );
    let e = store
        .transition_task(
            t.id,
            &[TaskState::Queued, TaskState::Running],
            TaskPatch::to(TaskState::Cancelled),
        )
        .await
        .expect_err("a final state is final");
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    let e = store
        .transition_task(
            crate::task::TaskId::new(),
            &[TaskState::Queued],
            TaskPatch::to(TaskState::Running),
        )
        .await
        .expect_err("no such task");
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let q = TaskQuery {
        org: Some(o.clone()),
        states: Some(vec![TaskState::Completed]),
        ..TaskQuery::default()
    };
    assert_eq!(store.list_tasks(&q).await?.count, 1);
    Ok(())
}

/// Schedule dedup: targets claimed within a window are not handed out again in it.
pub async fn claim_targets(store: &dyn TaskQueue) -> Result<()> {
    let s = ScheduleId::new();
    let keys: Vec<NaturalKey> = (0..100)
        .map(|i| NaturalKey::from_parts(["internet", &format!("h{i}.example")]))
        .collect();
    let t0 = Timestamp::from_secs(1_000_000);
    let first = store.claim_targets(s, t0, t0, keys.clone()).await?;
    assert_eq!(first.len(), 100);
    let t1 = t0.plus_secs(60);
    let second = store.claim_targets(s, t0, t1, keys.clone()).await?;
    assert!(second.is_empty(), "the same window hands out nothing twice");
    let mut more = keys[..10].to_vec();
    more.push(NaturalKey::from_parts(["internet", "new.example"]));
    let third = store.claim_targets(s, t0, t1, more).await?;
    assert_eq!(
        third,
        vec![NaturalKey::from_parts(["internet", "new.example"])]
    );
    // The next window starts after the claims: everything is due again.
    let t2 = t0.plus_secs(86_400);
    let next = store.claim_targets(s, t2, t2, keys.clone()).await?;
    assert_eq!(next.len(), 100);
    // Another schedule has its own claims.
    assert_eq!(
        store
            .claim_targets(ScheduleId::new(), t0, t1, keys.clone())
            .await?
            .len(),
        100
    );
    // A key named twice in one call is handed out once, in the order of the call.
    let twice = vec![keys[1].clone(), keys[0].clone(), keys[1].clone()];
    assert_eq!(
        store
            .claim_targets(ScheduleId::new(), t0, t0, twice)
            .await?,
        vec![keys[1].clone(), keys[0].clone()]
    );
    // A whole large set in one call (what a tick sends), then again in the same window.
    let many: Vec<NaturalKey> = (0..20_000)
        .map(|i| NaturalKey::from_parts(["internet", &format!("m{i}.example")]))
        .collect();
    let big = ScheduleId::new();
    assert_eq!(store.claim_targets(big, t0, t0, many.clone()).await?, many);
    assert!(
        store
            .claim_targets(big, t0, t1, many.clone())
            .await?
            .is_empty()
    );
    assert_eq!(store.claim_targets(big, t2, t2, many).await?.len(), 20_000);
    Ok(())
}

/// [`TaskQueue::claim_targets_oldest`]: the same claims as [`TaskQueue::claim_targets`], and an
/// oldest claim that, when the backend tells it, is the oldest of the targets' claims.
pub async fn claim_targets_oldest(store: &dyn TaskQueue) -> Result<()> {
    let s = ScheduleId::new();
    let keys: Vec<NaturalKey> = (0..10)
        .map(|i| NaturalKey::from_parts(["internet", &format!("o{i}.example")]))
        .collect();
    let t0 = Timestamp::from_secs(2_000_000);
    let first = store
        .claim_targets_oldest(s, t0, t0, keys[..5].to_vec())
        .await?;
    assert_eq!(first.fresh, keys[..5].to_vec());
    assert!(first.oldest.is_none_or(|o| o == t0), "{first:?}");
    // Five more an hour later: the oldest claim is still the first one's.
    let t1 = t0.plus_secs(3600);
    let second = store.claim_targets_oldest(s, t0, t1, keys.clone()).await?;
    assert_eq!(second.fresh, keys[5..].to_vec());
    assert!(second.oldest.is_none_or(|o| o == t0), "{second:?}");
    // Nothing fresh: still the oldest.
    let third = store
        .claim_targets_oldest(s, t0, t1.plus_secs(1), keys.clone())
        .await?;
    assert!(third.fresh.is_empty());
    assert!(third.oldest.is_none_or(|o| o == t0), "{third:?}");
    // A window that starts after the first claims: those are claimed again now, the later ones
    // are still the oldest.
    let t2 = t0.plus_secs(86_400);
    let fourth = store
        .claim_targets_oldest(s, t0.plus_secs(60), t2, keys.clone())
        .await?;
    assert_eq!(fourth.fresh, keys[..5].to_vec());
    assert!(fourth.oldest.is_none_or(|o| o == t1), "{fourth:?}");
    // No targets, nothing claimed and no oldest.
    let none = store.claim_targets_oldest(s, t0, t2, Vec::new()).await?;
    assert!(none.fresh.is_empty() && none.oldest.is_none());
    Ok(())
}

fn schedule(o: Option<&OrgCode>, next_secs: i64, enabled: bool) -> Result<Schedule> {
    Ok(Schedule {
        id: ScheduleId::new(),
        number: 0,
        org: o.cloned(),
        plugin_id: "dns".into(),
        object_set: None,
        interval: Interval::from_secs(3600)?,
        enabled,
        next_run_at: Timestamp::from_secs(next_secs),
        last_run_at: None,
        created_at: Timestamp::from_secs(0),
        owner: None,
        disabled_reason: None,
    })
}

/// Schedules: stored, listed per organization, and due ones found in due order.
pub async fn schedules(store: &dyn ScheduleStore) -> Result<()> {
    let o = org("t-sched");
    let mut early = schedule(Some(&o), 100, true)?;
    // The owner and the reason round-trip with the rest.
    early.owner = Some(crate::control::Submitter {
        subject: "user:alice".into(),
        permissions: crate::permission::Permissions::from_json(
            &serde_json::json!({"objects.add_hostname": {"pks": ["internet|a.example"]}}),
            "owner",
        )?,
        token: Some(crate::control::SubmitterToken {
            jti: "j-1".into(),
            expires_at: Timestamp::from_secs(4_000_000_000),
        }),
    });
    early.disabled_reason = Some("a reason".into());
    let later = schedule(Some(&o), 200, true)?;
    let off = schedule(Some(&o), 50, false)?;
    let global = schedule(None, 150, true)?;
    let future = schedule(Some(&o), 10_000_000_000, true)?;
    for s in [&later, &early, &off, &global, &future] {
        store.put_schedule(s.clone()).await?;
    }
    // The store numbered it (see `integer_ids`); everything else round-trips.
    early.number = store.get_schedule(early.id).await?.map_or(0, |s| s.number);
    assert!(early.number > 0);
    assert_eq!(store.get_schedule(early.id).await?, Some(early.clone()));
    let due = store.due_schedules(Timestamp::from_secs(1_000), 10).await?;
    let due_ids: Vec<ScheduleId> = due.iter().map(|s| s.id).collect();
    assert_eq!(
        due_ids,
        vec![early.id, global.id, later.id],
        "enabled, due, soonest first"
    );
    assert_eq!(
        store
            .due_schedules(Timestamp::from_secs(1_000), 1)
            .await?
            .len(),
        1
    );
    // Moving a schedule's next run takes it out of the due set.
    let mut moved = early.clone();
    moved.next_run_at = Timestamp::from_secs(5_000);
    moved.last_run_at = Some(Timestamp::from_secs(1_000));
    store.put_schedule(moved).await?;
    let due: Vec<ScheduleId> = store
        .due_schedules(Timestamp::from_secs(1_000), 10)
        .await?
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(due, vec![global.id, later.id]);
    let mine = store.list_schedules(Some(&o)).await?;
    assert_eq!(mine.len(), 4);
    assert!(store.list_schedules(None).await?.len() >= 5);
    assert!(store.delete_schedule(later.id).await?);
    assert!(!store.delete_schedule(later.id).await?);
    assert!(store.get_schedule(later.id).await?.is_none());
    let due: Vec<ScheduleId> = store
        .due_schedules(Timestamp::from_secs(1_000), 10)
        .await?
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(due, vec![global.id], "a deleted schedule is never due");
    Ok(())
}

/// The due index follows every write: a schedule re-put unchanged is due once, a disabled one never,
/// re-enabling or moving it puts it back at its new time, and a thousand schedules that are not due
/// leave the due set empty.
pub async fn due_index(store: &dyn ScheduleStore) -> Result<()> {
    let o = org("t-due");
    let mine = |due: Vec<Schedule>| -> Vec<ScheduleId> {
        due.into_iter()
            .filter(|s| s.org.as_ref() == Some(&o))
            .map(|s| s.id)
            .collect()
    };
    let far = 20_000_000_000;
    let mut idle = Vec::new();
    for i in 0..1000 {
        let s = schedule(Some(&o), far + i, true)?;
        store.put_schedule(s.clone()).await?;
        idle.push(s);
    }
    let now = Timestamp::from_secs(far - 1);
    assert!(
        mine(store.due_schedules(now, 10_000).await?).is_empty(),
        "none of the thousand is due"
    );
    let mut s = schedule(Some(&o), far - 10, true)?;
    store.put_schedule(s.clone()).await?;
    store.put_schedule(s.clone()).await?;
    assert_eq!(
        mine(store.due_schedules(now, 10_000).await?),
        vec![s.id],
        "put twice, due once"
    );
    s.enabled = false;
    store.put_schedule(s.clone()).await?;
    assert!(
        mine(store.due_schedules(now, 10_000).await?).is_empty(),
        "a disabled schedule is never due"
    );
    s.enabled = true;
    s.next_run_at = Timestamp::from_secs(far - 5);
    store.put_schedule(s.clone()).await?;
    let due = store.due_schedules(now, 10_000).await?;
    assert_eq!(
        due.iter()
            .filter(|d| d.id == s.id)
            .map(|d| d.next_run_at)
            .collect::<Vec<_>>(),
        vec![s.next_run_at],
        "re-enabled at its new time, with the stored record"
    );
    // One of the idle ones moved into the past is due, before `s`; the rest stay out.
    let mut early = idle[500].clone();
    early.next_run_at = Timestamp::from_secs(far - 20);
    store.put_schedule(early.clone()).await?;
    assert_eq!(
        mine(store.due_schedules(now, 10_000).await?),
        vec![early.id, s.id]
    );
    assert!(store.delete_schedule(early.id).await?);
    assert!(store.delete_schedule(s.id).await?);
    assert!(mine(store.due_schedules(now, 10_000).await?).is_empty());
    // Everything is due later, soonest first, and the limit cuts the list.
    let later = Timestamp::from_secs(far + 2_000);
    let due = mine(store.due_schedules(later, 2_000).await?);
    assert_eq!(due.len(), 999);
    assert_eq!(due.first(), Some(&idle[0].id));
    for s in idle {
        store.delete_schedule(s.id).await?;
    }
    assert!(mine(store.due_schedules(later, 2_000).await?).is_empty());
    Ok(())
}

/// Object sets round-trip and are listed per organization.
pub async fn object_sets(store: &dyn ScheduleStore) -> Result<()> {
    let o = org("t-cat");
    let set = ObjectSet {
        id: ObjectSetId::new(),
        number: 0,
        name: "All hostnames".into(),
        description: String::new(),
        org: o.clone(),
        object_type: ObjectType::Hostname,
        all: true,
        filters: vec![("network".into(), vec!["internet".into()])],
        keys: vec![NaturalKey::from_parts(["internet", "a.com"])],
    };
    let set = store.put_object_set(set.clone()).await?;
    assert!(set.number > 0, "the store numbered it");
    assert_eq!(store.get_object_set(set.id).await?, Some(set.clone()));
    assert_eq!(store.list_object_sets(Some(&o)).await?, vec![set.clone()]);
    assert!(
        store
            .list_object_sets(Some(&org("t-cat-other")))
            .await?
            .is_empty()
    );
    assert!(store.delete_object_set(set.id).await?);
    assert!(store.get_object_set(set.id).await?.is_none());
    Ok(())
}

/// Integer ids: a schedule or object set stored with `number` 0 gets the next integer id (unique
/// among its kind, increasing, never reused after a delete), keeps it when it is stored again (with 0
/// or with its number), and concurrent creations never share one.
pub async fn integer_ids(store: &dyn ScheduleStore) -> Result<()> {
    let o = org("t-numbers");
    let set = |name: &str| ObjectSet {
        id: ObjectSetId::new(),
        number: 0,
        name: name.into(),
        description: String::new(),
        org: o.clone(),
        object_type: ObjectType::Hostname,
        all: true,
        filters: vec![],
        keys: vec![],
    };
    let a = store.put_object_set(set("a")).await?;
    let b = store.put_object_set(set("b")).await?;
    assert!(
        a.number > 0 && b.number > a.number,
        "{} then {}",
        a.number,
        b.number
    );
    let mut again = a.clone();
    again.number = 0;
    again.description = "changed".into();
    let again = store.put_object_set(again).await?;
    assert_eq!(
        again.number, a.number,
        "stored again with 0: keeps its number"
    );
    assert_eq!(
        store.get_object_set(a.id).await?.map(|s| s.number),
        Some(a.number)
    );
    assert!(store.delete_object_set(b.id).await?);
    let c = store.put_object_set(set("c")).await?;
    assert!(
        c.number > b.number,
        "a deleted set's number is never reused"
    );

    let s1 = store.put_schedule(schedule(Some(&o), 100, true)?).await?;
    let s2 = store.put_schedule(schedule(Some(&o), 100, true)?).await?;
    assert!(s1.number > 0 && s2.number > s1.number);
    let mut moved = s1.clone();
    moved.number = 0;
    moved.next_run_at = Timestamp::from_secs(200);
    assert_eq!(store.put_schedule(moved).await?.number, s1.number);
    assert_eq!(
        store.get_schedule(s1.id).await?.map(|s| s.number),
        Some(s1.number)
    );

    // Concurrent creations get distinct numbers.
    let made =
        futures::future::try_join_all((0..16).map(|i| store.put_object_set(set(&format!("p{i}")))))
            .await?;
    let numbers: std::collections::BTreeSet<u64> = made.iter().map(|s| s.number).collect();
    assert_eq!(numbers.len(), 16);
    assert!(numbers.iter().all(|n| *n > c.number));
    Ok(())
}

/// Organizations round-trip.
pub async fn organizations(store: &dyn OrgStore) -> Result<()> {
    let o = org("t-cat");
    let acme = Organization::new(o.clone(), "Acme");
    store.put_organization(acme.clone()).await?;
    assert_eq!(store.get_organization(&o).await?, Some(acme.clone()));
    assert!(store.list_organizations().await?.contains(&acme));
    assert!(store.delete_organization(&o).await?);
    assert!(store.get_organization(&o).await?.is_none());
    Ok(())
}

/// Plugin records round-trip; a later write replaces a record (an enable or disable).
pub async fn plugins(store: &dyn PluginCatalog) -> Result<()> {
    let defs = PluginDef::parse_file(
        r#"[{"plugin_id": "t-dns", "oci_image": "img", "oci_arguments": ["dig", "{hostname}"], "permissions": {"objects.add_hostname": {}}},
            {"plugin_id": "t-nmap", "oci_image": "img", "oci_arguments": ["nmap", "{ipaddress}"]}]"#,
        "conformance.json",
    )?;
    let (writes, _) = crate::plugin::sync(&[], &defs, true);
    store.put_plugins(writes).await?;
    let got = store.get_plugin("t-dns").await?.expect("plugin");
    assert_eq!(got.def, defs[0]);
    let mut off: PluginRecord = got.clone();
    off.enabled = false;
    store.put_plugins(vec![off]).await?;
    assert!(!store.get_plugin("t-dns").await?.expect("plugin").enabled);
    let ids: Vec<String> = store
        .list_plugins()
        .await?
        .into_iter()
        .map(|r| r.def.plugin_id)
        .collect();
    assert!(ids.contains(&"t-dns".into()) && ids.contains(&"t-nmap".into()));
    assert!(store.get_plugin("t-missing").await?.is_none());
    Ok(())
}

/// Enabling and disabling is per organization: an override beats the catalogue's default for its
/// organization only, and clearing it returns to the default.
pub async fn plugin_overrides(store: &dyn PluginCatalog) -> Result<()> {
    let defs = PluginDef::parse_file(
        r#"[{"plugin_id": "t-ov", "oci_image": "img", "oci_arguments": ["dig", "{hostname}"]}]"#,
        "conformance.json",
    )?;
    let (writes, _) = crate::plugin::sync(&[], &defs, true);
    store.put_plugins(writes).await?;
    let (a, b) = (org("t-ov-a"), org("t-ov-b"));
    assert!(store.plugin_overrides(&a).await?.is_empty());
    assert_eq!(store.plugin_for(&a, "t-ov").await?.map(|p| p.1), Some(true));
    store.set_plugin_override(&a, "t-ov", Some(false)).await?;
    assert_eq!(
        store.plugin_overrides(&a).await?,
        [("t-ov".to_string(), false)].into_iter().collect()
    );
    assert_eq!(
        store.plugin_for(&a, "t-ov").await?.map(|p| p.1),
        Some(false)
    );
    assert_eq!(
        store.plugin_for(&b, "t-ov").await?.map(|p| p.1),
        Some(true),
        "another organization keeps the default"
    );
    assert!(store.get_plugin("t-ov").await?.expect("plugin").enabled);
    store.set_plugin_override(&b, "t-ov", Some(true)).await?;
    store.clear_plugin_overrides(&a).await?;
    assert!(store.plugin_overrides(&a).await?.is_empty());
    assert_eq!(store.plugin_overrides(&b).await?.len(), 1);
    store.set_plugin_override(&b, "t-ov", None).await?;
    assert!(store.plugin_overrides(&b).await?.is_empty());
    assert!(store.plugin_for(&a, "t-missing").await?.is_none());
    Ok(())
}

/// The token denylist.
pub async fn revoked_tokens(store: &dyn RevocationList) -> Result<()> {
    store.revoke_token("jti-old", 100).await?;
    store.revoke_token("jti-new", 10_000).await?;
    assert!(store.is_token_revoked("jti-old").await?);
    assert!(store.is_token_revoked("jti-new").await?);
    assert!(!store.is_token_revoked("jti-never").await?);
    assert_eq!(store.purge_revoked(1_000).await?, 1);
    assert!(
        !store.is_token_revoked("jti-old").await?,
        "expired tokens need no denylist entry"
    );
    assert!(store.is_token_revoked("jti-new").await?);
    Ok(())
}

/// A patch's token (jti and expiry) is kept on the record; deleting an organization's tasks
/// deletes them all, and only them.
pub async fn tokens_and_org_deletion(store: &dyn TaskQueue) -> Result<()> {
    let gone = org("t-gone");
    let kept = org("t-kept");
    let a = task(&gone, "dns", 1_000);
    let b = task(&gone, "nmap", 1_001);
    let c = task(&kept, "dns", 1_002);
    store
        .create_tasks(vec![a.clone(), b.clone(), c.clone()])
        .await?;
    let mut p = TaskPatch::to(TaskState::Running);
    p.token = Some(crate::task::TaskToken {
        jti: "jti-a".into(),
        exp: 77,
    });
    store.transition_task(a.id, &[TaskState::Queued], p).await?;
    let got = store.get_task(a.id).await?.expect("task");
    assert_eq!(
        got.token.map(|t| (t.jti, t.exp)),
        Some(("jti-a".into(), 77))
    );
    assert_eq!(store.delete_org_tasks(&gone).await?, 2);
    assert!(store.get_task(a.id).await?.is_none());
    assert!(store.get_task(b.id).await?.is_none());
    let q = TaskQuery {
        org: Some(gone.clone()),
        ..TaskQuery::default()
    };
    assert_eq!(store.list_tasks(&q).await?.count, 0);
    let all = store.list_tasks(&TaskQuery::default()).await?;
    assert!(
        all.items.iter().all(|t| t.org != gone),
        "the index is gone too"
    );
    assert_eq!(store.get_task(c.id).await?, Some(c));
    assert_eq!(store.delete_org_tasks(&gone).await?, 0);
    Ok(())
}

/// Refused API calls of a running task are counted on its record, concurrently too, with the first
/// reason kept; the count survives the final transition; a task that is not running records none.
pub async fn refused_calls(store: Arc<dyn TaskQueue>) -> Result<()> {
    let o = org("t-refused");
    let t = task(&o, "parse-nmap", 1_000);
    let idle = task(&o, "parse-nmap", 1_001);
    store.create_tasks(vec![t.clone(), idle.clone()]).await?;
    store
        .transition_task(
            t.id,
            &[TaskState::Queued],
            TaskPatch::to(TaskState::Running),
        )
        .await?;
    store
        .transition_task(
            t.id,
            &[TaskState::Running],
            TaskPatch::refused_call("first: objects.add_ipport"),
        )
        .await?;
    let mut writers = Vec::new();
    for i in 0..8 {
        let s = store.clone();
        writers.push(tokio::spawn(async move {
            s.transition_task(
                t.id,
                &[TaskState::Running],
                TaskPatch::refused_call(format!("later {i}")),
            )
            .await
        }));
    }
    for w in writers {
        w.await
            .map_err(|e| Error::invalid("refused_calls", e.to_string()))??;
    }
    let got = store.get_task(t.id).await?.expect("task");
    assert_eq!(got.state, TaskState::Running);
    assert_eq!(got.refused_calls, 9, "every refusal counts, none lost");
    assert_eq!(
        got.first_refusal.as_deref(),
        Some("first: objects.add_ipport")
    );
    store
        .transition_task(
            t.id,
            &[TaskState::Running],
            TaskPatch::to(TaskState::Completed),
        )
        .await?;
    let done = store.get_task(t.id).await?.expect("task");
    assert_eq!((done.state, done.refused_calls), (TaskState::Completed, 9));
    let e = store
        .transition_task(
            idle.id,
            &[TaskState::Running],
            TaskPatch::refused_call("not running"),
        )
        .await
        .expect_err("a queued task records no refusal");
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    let idle = store.get_task(idle.id).await?.expect("task");
    assert_eq!((idle.refused_calls, idle.first_refusal), (0, None));
    Ok(())
}

/// Fail every running task and cancel every queued one (left by earlier cases), so that the lease
/// cases start from an empty queue.
async fn drain(store: &dyn TaskQueue) -> Result<()> {
    let now = Timestamp::now();
    // Running tasks left by earlier cases (without leases) fail.
    let end_of_days = Timestamp::from_secs(4_000_000_000);
    while !store
        .recover_expired(end_of_days, &[], None, 1000)
        .await?
        .is_empty()
    {}
    loop {
        let got = store
            .claim_tasks("drain", 100, now, now.plus_secs(60))
            .await?;
        if got.is_empty() {
            return Ok(());
        }
        for t in got {
            store
                .finish_leased(t.id, "drain", now, TaskPatch::to(TaskState::Cancelled))
                .await?;
        }
    }
}

/// Claims take the oldest queued tasks first, make them running for the claimer with a lease, one
/// more attempt and `started_at`; renewals and leased writes are the holder's alone while the lease
/// lasts; a write out of `running` clears the lease.
pub async fn leases(store: &dyn TaskQueue) -> Result<()> {
    drain(store).await?;
    let o = org("t-lease");
    let (a, b, c) = (
        task(&o, "dns", 3_000),
        task(&o, "dns", 1_000),
        task(&o, "dns", 2_000),
    );
    store
        .create_tasks(vec![a.clone(), b.clone(), c.clone()])
        .await?;
    let t0 = Timestamp::from_secs(2_000_000_000);
    let until = t0.plus_secs(30);
    assert!(store.claim_tasks("w1", 0, t0, until).await?.is_empty());
    let got = store.claim_tasks("w1", 2, t0, until).await?;
    let ids: Vec<_> = got.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![b.id, c.id], "oldest first");
    for t in &got {
        assert_eq!(
            (t.state, t.attempts, t.started_at),
            (TaskState::Running, 1, Some(t0))
        );
        assert_eq!(
            t.lease,
            Some(crate::task::Lease {
                worker: "w1".into(),
                until
            })
        );
        assert_eq!(store.get_task(t.id).await?.as_ref(), Some(t), "as stored");
    }
    let got = store.claim_tasks("w2", 5, t0, until).await?;
    assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), vec![a.id]);
    assert!(store.claim_tasks("w2", 5, t0, until).await?.is_empty());

    // Renewal: the holder's, before the end.
    let later = t0.plus_secs(20);
    let r = store
        .renew_lease(b.id, "w1", later, later.plus_secs(30))
        .await?;
    assert_eq!(r.lease.map(|l| l.until), Some(later.plus_secs(30)));
    let conflict = |r: Result<Task>, what: &str| match r {
        Err(Error::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
        Ok(t) => panic!("{what}: expected a conflict, got {t:?}"),
    };
    conflict(
        store
            .renew_lease(b.id, "w2", later, later.plus_secs(30))
            .await,
        "another worker renews",
    )?;
    conflict(
        store
            .renew_lease(c.id, "w1", until.plus_secs(1), until.plus_secs(30))
            .await,
        "a renewal after the lease ended",
    )?;
    let e = store
        .renew_lease(crate::task::TaskId::new(), "w1", t0, until)
        .await
        .expect_err("no such task");
    assert!(matches!(e, Error::NotFound { .. }), "{e}");

    // Leased writes: the token, then the end, which clears the lease.
    let mut p = TaskPatch::to(TaskState::Running);
    p.token = Some(crate::task::TaskToken {
        jti: "jti-lease-b".into(),
        exp: 5,
    });
    conflict(
        store.finish_leased(b.id, "w2", later, p.clone()).await,
        "another worker writes",
    )?;
    let t = store.finish_leased(b.id, "w1", later, p).await?;
    assert_eq!(t.token.map(|t| t.jti), Some("jti-lease-b".to_string()));
    assert!(t.lease.is_some(), "a running patch keeps the lease");
    conflict(
        store
            .finish_leased(
                c.id,
                "w1",
                until.plus_secs(1),
                TaskPatch::to(TaskState::Completed),
            )
            .await,
        "a write after the lease ended",
    )?;
    let mut done = TaskPatch::to(TaskState::Completed);
    done.ended_at = Some(later);
    let t = store.finish_leased(b.id, "w1", later, done).await?;
    assert_eq!((t.state, t.lease), (TaskState::Completed, None));
    assert_eq!(store.get_task(b.id).await?.and_then(|t| t.lease), None);
    conflict(
        store
            .renew_lease(b.id, "w1", later, later.plus_secs(30))
            .await,
        "a renewal of an ended task",
    )?;
    // Cancelled through the API (any state change out of running) ends the lease too.
    let t = store
        .transition_task(
            a.id,
            &[TaskState::Running],
            TaskPatch::to(TaskState::Cancelled),
        )
        .await?;
    assert_eq!(t.lease, None);
    conflict(
        store.renew_lease(a.id, "w2", t0, until).await,
        "a renewal of a cancelled task",
    )?;
    // Clean up: c's lease ends, it is recovered by the next cases' recoveries otherwise.
    store
        .finish_leased(c.id, "w1", t0, TaskPatch::to(TaskState::Cancelled))
        .await?;
    Ok(())
}

/// Two workers claiming concurrently from 200 queued tasks never get the same task and together get
/// all of them.
pub async fn concurrent_claims(store: Arc<dyn TaskQueue>) -> Result<()> {
    drain(&*store).await?;
    let o = org("t-claimers");
    let ts: Vec<Task> = (0..200).map(|i| task(&o, "dns", 10_000 + i)).collect();
    store.create_tasks(ts.clone()).await?;
    let now = Timestamp::now();
    let mut handles = Vec::new();
    for w in ["claimer-1", "claimer-2"] {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim_tasks(w, 7, now, now.plus_secs(60)).await?;
                if got.is_empty() {
                    return Ok::<_, Error>(mine);
                }
                for t in got {
                    assert_eq!(
                        (t.state, t.lease.as_ref().map(|l| l.worker.as_str())),
                        (TaskState::Running, Some(w))
                    );
                    mine.push(t.id);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(
            h.await
                .map_err(|e| Error::backend_source("test", e, false))??,
        );
    }
    let n = all.len();
    let unique: std::collections::BTreeSet<_> = all.into_iter().collect();
    assert_eq!(unique.len(), n, "no task was claimed twice");
    let want: std::collections::BTreeSet<_> = ts.iter().map(|t| t.id).collect();
    assert_eq!(unique, want, "together the claimers got every task");
    for t in &ts {
        let got = store.get_task(t.id).await?.expect("task");
        assert_eq!(got.attempts, 1, "claimed once");
    }
    // Clean up.
    for t in ts {
        let got = store.get_task(t.id).await?.expect("task");
        let w = got.lease.map(|l| l.worker).unwrap_or_default();
        store
            .finish_leased(t.id, &w, now, TaskPatch::to(TaskState::Cancelled))
            .await?;
    }
    Ok(())
}

/// Recovery: tasks whose lease ended (or that have none) are requeued (plugins in `requeue`) or
/// failed, exactly once with several recoverers racing, their tokens revoked in the same write; the
/// old holder can neither renew nor write the end afterwards; live leases of other workers are left
/// alone, and a restarting owner gets back what it held.
pub async fn lease_recovery(store: Arc<dyn TaskStore>) -> Result<()> {
    drain(&*store).await?;
    let o = org("t-recover");
    let idem = "download".to_string();
    let ts: Vec<Task> = (0..20)
        .map(|i| task(&o, if i % 2 == 0 { "download" } else { "dns" }, 20_000 + i))
        .collect();
    store.create_tasks(ts.clone()).await?;
    let t0 = Timestamp::from_secs(2_000_000_000);
    let until = t0.plus_secs(30);
    let claimed = store.claim_tasks("dead", 20, t0, until).await?;
    assert_eq!(claimed.len(), 20);
    for (i, t) in claimed.iter().enumerate() {
        let mut p = TaskPatch::to(TaskState::Running);
        p.token = Some(crate::task::TaskToken {
            jti: format!("jti-recover-{i}"),
            exp: 4_000_000_000,
        });
        store.finish_leased(t.id, "dead", t0, p).await?;
    }
    // Not yet: every lease lasts.
    assert!(
        store
            .recover_expired(until, std::slice::from_ref(&idem), None, 100)
            .await?
            .is_empty(),
        "a lease that ends at now has not ended before now"
    );
    let after = until.plus_secs(1);
    let mut handles = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        let requeue = vec![idem.clone()];
        handles.push(tokio::spawn(async move {
            store.recover_expired(after, &requeue, None, 1000).await
        }));
    }
    let mut recovered = Vec::new();
    for h in handles {
        recovered.extend(
            h.await
                .map_err(|e| Error::backend_source("test", e, false))??,
        );
    }
    let ids: std::collections::BTreeSet<_> = recovered.iter().map(|t| t.id).collect();
    assert_eq!(
        (recovered.len(), ids.len()),
        (20, 20),
        "each expired lease recovered exactly once"
    );
    for t in &recovered {
        assert_eq!(t.lease, None);
        let reason = t.reason.clone().unwrap_or_default();
        assert!(reason.contains("lease"), "{reason}");
        if t.plugin_id == idem {
            assert_eq!((t.state, t.ended_at), (TaskState::Queued, None));
            assert!(reason.starts_with("requeued"), "{reason}");
        } else {
            assert_eq!((t.state, t.ended_at), (TaskState::Failed, Some(after)));
        }
        assert_eq!(store.get_task(t.id).await?.as_ref(), Some(t), "as stored");
        let jti = t.token.as_ref().map(|k| k.jti.clone()).expect("a token");
        assert!(store.is_token_revoked(&jti).await?, "{jti} revoked");
    }
    // The old holder lost them.
    let old = &claimed[0];
    let e = store
        .renew_lease(old.id, "dead", t0, until)
        .await
        .expect_err("renewal after recovery");
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    for t in &claimed {
        let e = store
            .finish_leased(t.id, "dead", t0, TaskPatch::to(TaskState::Completed))
            .await
            .expect_err("the old holder writes no end");
        assert!(matches!(e, Error::Conflict(_)), "{e}");
    }
    // Requeued tasks are claimed again: a second attempt.
    let again = store
        .claim_tasks("alive", 100, after, after.plus_secs(30))
        .await?;
    assert_eq!(again.len(), 10);
    assert!(again.iter().all(|t| t.attempts == 2 && t.plugin_id == idem));
    // A live lease of another worker stays; the same worker restarting gets its tasks back; a
    // running task without a lease (before leases) is recovered.
    let legacy = task(&o, "dns", 30_000);
    store.create_tasks(vec![legacy.clone()]).await?;
    store
        .transition_task(
            legacy.id,
            &[TaskState::Queued],
            TaskPatch::to(TaskState::Running),
        )
        .await?;
    let got = store
        .recover_expired(after, std::slice::from_ref(&idem), Some("other"), 100)
        .await?;
    assert_eq!(
        got.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![legacy.id],
        "only the task without a lease"
    );
    assert!(
        got[0]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("restarted"),
        "{:?}",
        got[0].reason
    );
    let got = store
        .recover_expired(after, std::slice::from_ref(&idem), Some("alive"), 3)
        .await?;
    assert_eq!(got.len(), 3, "at most limit");
    let rest = store
        .recover_expired(after, std::slice::from_ref(&idem), Some("alive"), 100)
        .await?;
    assert_eq!(rest.len(), 7);
    for t in got.iter().chain(&rest) {
        assert_eq!(t.state, TaskState::Queued);
        let reason = t.reason.as_deref().unwrap_or_default();
        assert!(reason.contains("alive restarted"), "{reason}");
    }
    // Clean up.
    drain(&*store).await?;
    Ok(())
}

/// Heartbeats are upserts by id, listed by id, and forgotten once silent before a time.
pub async fn replicas(store: &dyn ReplicaRegistry) -> Result<()> {
    use crate::replica::{ReplicaInfo, Role};
    let t0 = Timestamp::from_secs(1_900_000_000);
    let info = |id: &str, seen: i64, running: u32| ReplicaInfo {
        id: id.into(),
        roles: [Role::Worker, Role::Scheduler].into_iter().collect(),
        started_at: t0,
        last_seen: t0.plus_secs(seen),
        running,
        version: "0.1.0".into(),
    };
    store.heartbeat(info("r-b", 0, 1)).await?;
    store.heartbeat(info("r-a", 0, 0)).await?;
    let mut api = info("r-a", 5, 3);
    api.roles = [Role::Api].into_iter().collect();
    store.heartbeat(api.clone()).await?;
    let all = store.list_replicas().await?;
    assert_eq!(all, vec![api.clone(), info("r-b", 0, 1)], "upserted, by id");
    assert_eq!(store.purge_replicas(t0.plus_secs(1)).await?, 1);
    assert_eq!(store.list_replicas().await?, vec![api]);
    assert_eq!(store.purge_replicas(t0.plus_secs(1)).await?, 0);
    assert_eq!(store.purge_replicas(t0.plus_secs(6)).await?, 1);
    assert!(store.list_replicas().await?.is_empty());
    Ok(())
}

/// Every lease case ([`leases`], [`concurrent_claims`], [`lease_recovery`]): they need the
/// revocation list beside the queue.
pub async fn run_leases(store: Arc<dyn TaskStore>) -> Result<()> {
    leases(&*store).await?;
    concurrent_claims(store.clone()).await?;
    lease_recovery(store).await?;
    Ok(())
}

/// Every [`ReplicaRegistry`] case.
pub async fn run_replica_registry(store: &dyn ReplicaRegistry) -> Result<()> {
    replicas(store).await
}

/// Schedulers ticking side by side (replicas on one store): claims of the same targets for one
/// schedule in one window, made concurrently, hand each target to exactly one claimer.
pub async fn concurrent_target_claims(store: Arc<dyn TaskQueue>) -> Result<()> {
    let s = ScheduleId::new();
    let keys: Vec<NaturalKey> = (0..300)
        .map(|i| NaturalKey::from_parts(["internet", &format!("c{i}.example")]))
        .collect();
    let t0 = Timestamp::from_secs(1_500_000);
    let mut handles = Vec::new();
    for i in 0..4 {
        let store = store.clone();
        // Overlapping halves, in different orders, at slightly different times.
        let mut mine: Vec<NaturalKey> = keys.iter().skip(i * 50).take(200).cloned().collect();
        if i % 2 == 1 {
            mine.reverse();
        }
        let now = t0.plus_millis(i as i64 * 10);
        handles.push(tokio::spawn(async move {
            store
                .claim_targets(s, now.plus_secs(-3599), now, mine)
                .await
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(
            h.await
                .map_err(|e| Error::backend_source("test", e, false))??,
        );
    }
    let n = all.len();
    let unique: std::collections::BTreeSet<NaturalKey> = all.into_iter().collect();
    assert_eq!(unique.len(), n, "no target handed out twice in one window");
    assert_eq!(n, 300, "every target once");
    Ok(())
}

/// Every [`TaskQueue`] case.
pub async fn run_task_queue(store: Arc<dyn TaskQueue>) -> Result<()> {
    create_get_list(&*store).await?;
    transitions(store.clone()).await?;
    claim_targets(&*store).await?;
    claim_targets_oldest(&*store).await?;
    concurrent_target_claims(store.clone()).await?;
    tokens_and_org_deletion(&*store).await?;
    refused_calls(store.clone()).await?;
    Ok(())
}

/// Every [`ScheduleStore`] case.
pub async fn run_schedule_store(store: &dyn ScheduleStore) -> Result<()> {
    schedules(store).await?;
    due_index(store).await?;
    object_sets(store).await?;
    integer_ids(store).await?;
    written_marks(store).await?;
    Ok(())
}

/// A store shared by several processes ([`ScheduleStore::written_marks`] is `Some`): marking an
/// organization written changes its mark, every time, and no other organization's.
pub async fn written_marks(store: &dyn ScheduleStore) -> Result<()> {
    let (a, b) = (org("marks-a"), org("marks-b"));
    store.mark_written(&b).await?;
    let Some(before) = store.written_marks().await? else {
        // Not shared: marking is allowed and changes nothing observable.
        store.mark_written(&a).await?;
        assert!(
            store.written_marks().await?.is_none(),
            "written_marks stays None"
        );
        return Ok(());
    };
    let mark =
        |marks: &[(OrgCode, i64)], o: &OrgCode| marks.iter().find(|(m, _)| m == o).map(|(_, n)| *n);
    store.mark_written(&a).await?;
    let first = store.written_marks().await?.unwrap_or_default();
    assert!(
        mark(&first, &a).is_some(),
        "a marked organization has a mark"
    );
    assert_ne!(
        mark(&first, &a),
        mark(&before, &a),
        "marking changes the mark"
    );
    assert_eq!(
        mark(&first, &b),
        mark(&before, &b),
        "marking one organization leaves another's mark"
    );
    store.mark_written(&a).await?;
    let second = store.written_marks().await?.unwrap_or_default();
    assert_ne!(
        mark(&second, &a),
        mark(&first, &a),
        "marking again changes the mark again"
    );
    Ok(())
}

/// Every [`OrgStore`] case.
pub async fn run_org_store(store: &dyn OrgStore) -> Result<()> {
    organizations(store).await
}

/// Every [`PluginCatalog`] case.
pub async fn run_plugin_catalog(store: &dyn PluginCatalog) -> Result<()> {
    plugins(store).await?;
    plugin_overrides(store).await
}

/// Every [`RevocationList`] case.
pub async fn run_revocation_list(store: &dyn RevocationList) -> Result<()> {
    revoked_tokens(store).await
}

/// Run every case of every trait, in the order the suite always ran them.
pub async fn run_all(store: Arc<dyn TaskStore>) -> Result<()> {
    run_task_queue(store.clone()).await?;
    run_leases(store.clone()).await?;
    run_replica_registry(&*store).await?;
    run_schedule_store(&*store).await?;
    run_org_store(&*store).await?;
    run_plugin_catalog(&*store).await?;
    run_revocation_list(&*store).await?;
    run_rule_catalog(&*store).await?;
    Ok(())
}

/// Every [`RuleCatalog`](crate::rules::RuleCatalog) case.
pub async fn run_rule_catalog(store: &dyn crate::rules::RuleCatalog) -> Result<()> {
    rule_overrides(store).await?;
    processed_objects(store).await?;
    Ok(())
}

/// Rule enablement is per organization: an override for one organization only, cleared back to
/// the file's default.
pub async fn rule_overrides(store: &dyn crate::rules::RuleCatalog) -> Result<()> {
    let (a, b) = (org("t-rov-a"), org("t-rov-b"));
    assert!(store.rule_overrides(&a).await?.is_empty());
    store
        .set_rule_override(&a, "missing_spf", Some(false))
        .await?;
    store
        .set_rule_override(&a, "missing_caa", Some(true))
        .await?;
    store
        .set_rule_override(&b, "missing_spf", Some(true))
        .await?;
    assert_eq!(
        store.rule_overrides(&a).await?,
        [
            ("missing_caa".to_string(), true),
            ("missing_spf".to_string(), false)
        ]
        .into_iter()
        .collect()
    );
    store
        .set_rule_override(&a, "missing_spf", Some(true))
        .await?;
    assert_eq!(
        store.rule_overrides(&a).await?.get("missing_spf"),
        Some(&true),
        "replaced"
    );
    store.set_rule_override(&a, "missing_spf", None).await?;
    assert!(
        !store.rule_overrides(&a).await?.contains_key("missing_spf"),
        "cleared"
    );
    assert_eq!(
        store.rule_overrides(&b).await?,
        [("missing_spf".to_string(), true)].into_iter().collect(),
        "another organization is untouched"
    );
    store.clear_rule_state(&a).await?;
    assert!(store.rule_overrides(&a).await?.is_empty());
    assert_eq!(store.rule_overrides(&b).await?.len(), 1);
    store.clear_rule_state(&b).await?;
    Ok(())
}

/// Processed records: per organization and plugin, looked up for given objects or all at once;
/// marking twice is harmless.
pub async fn processed_objects(store: &dyn crate::rules::RuleCatalog) -> Result<()> {
    use crate::task::ObjectRef;
    let (a, b) = (org("t-proc-a"), org("t-proc-b"));
    let r = |ty: ObjectType, k: &str| ObjectRef {
        object_type: ty,
        key: k.parse::<NaturalKey>().expect("key"),
    };
    let h1 = r(ObjectType::Hostname, "internet|example.com");
    let h2 = r(ObjectType::Hostname, "internet|b.example.com");
    let ip = r(ObjectType::IpAddress, "internet|192.0.2.1");
    assert!(store.processed(&a, "dns", None).await?.is_empty());
    store
        .mark_processed(&a, "dns", &[h1.clone(), ip.clone()])
        .await?;
    store
        .mark_processed(&a, "dns", std::slice::from_ref(&h1))
        .await?;
    store
        .mark_processed(&a, "portscan", std::slice::from_ref(&ip))
        .await?;
    store
        .mark_processed(&b, "dns", std::slice::from_ref(&h2))
        .await?;
    store.mark_processed(&a, "dns", &[]).await?;
    assert_eq!(
        store.processed(&a, "dns", None).await?,
        [h1.clone(), ip.clone()].into_iter().collect()
    );
    assert_eq!(
        store
            .processed(&a, "dns", Some(&[h1.clone(), h2.clone()]))
            .await?,
        [h1.clone()].into_iter().collect(),
        "only the given objects, only those processed"
    );
    assert_eq!(
        store.processed(&a, "portscan", None).await?,
        [ip.clone()].into_iter().collect(),
        "per plugin"
    );
    assert!(
        store.processed(&a, "dn", None).await?.is_empty(),
        "no prefix match"
    );
    assert_eq!(
        store.processed(&b, "dns", None).await?,
        [h2.clone()].into_iter().collect(),
        "per organization"
    );
    store.clear_rule_state(&a).await?;
    assert!(store.processed(&a, "dns", None).await?.is_empty());
    assert!(store.processed(&a, "portscan", None).await?.is_empty());
    assert_eq!(store.processed(&b, "dns", None).await?.len(), 1);
    store.clear_rule_state(&b).await?;
    Ok(())
}
