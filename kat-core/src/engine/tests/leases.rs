//! Leases across engines sharing one store: recovery of a dead worker's tasks, a worker that lost
//! its lease writing nothing, cancellation from another replica, and schedulers ticking side by
//! side.

use std::collections::HashMap;

use super::*;
use crate::store::ReplicaRegistry;

/// Runs every container until it is cancelled or `run_for` passes (then exits 0); lists what runs
/// and the `leftover` containers a test plants; reaps leftovers whose task is not live.
#[derive(Debug)]
struct Held {
    run_for: Duration,
    running: std::sync::Mutex<HashMap<TaskId, String>>,
    started: std::sync::Mutex<Vec<TaskId>>,
    cancelled: std::sync::Mutex<Vec<TaskId>>,
    leftover: std::sync::Mutex<Vec<ManagedContainer>>,
}

impl Held {
    fn new(run_for: Duration) -> Arc<Self> {
        Arc::new(Held {
            run_for,
            running: Default::default(),
            started: Default::default(),
            cancelled: Default::default(),
            leftover: Default::default(),
        })
    }

    fn started(&self, id: TaskId) -> bool {
        self.started.lock().unwrap().contains(&id)
    }

    fn cancelled(&self, id: TaskId) -> bool {
        self.cancelled.lock().unwrap().contains(&id)
    }
}

#[async_trait]
impl ContainerRuntime for Held {
    async fn capabilities(&self) -> Result<Capabilities> {
        NotStarted.capabilities().await
    }
    async fn prepare_entrypoint(
        &self,
        b: &EntrypointBinary,
        v: &str,
        d: &str,
    ) -> Result<EntrypointMount> {
        NotStarted.prepare_entrypoint(b, v, d).await
    }
    async fn run(&self, s: ContainerSpec, cancel: CancellationToken) -> Result<Outcome> {
        let id: TaskId = s.labels[LABEL_TASK].parse()?;
        self.running.lock().unwrap().insert(id, s.name.clone());
        self.started.lock().unwrap().push(id);
        let reason = tokio::select! {
            () = cancel.cancelled() => {
                self.cancelled.lock().unwrap().push(id);
                EndReason::Cancelled
            }
            () = tokio::time::sleep(self.run_for) => EndReason::Exited,
        };
        self.running.lock().unwrap().remove(&id);
        Ok(Outcome {
            reason,
            exit_code: (reason == EndReason::Exited).then_some(0),
            ..exited_zero()
        })
    }
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>> {
        let mut out: Vec<ManagedContainer> = self
            .running
            .lock()
            .unwrap()
            .iter()
            .map(|(id, name)| ManagedContainer {
                id: name.clone(),
                name: name.clone(),
                task: Some(*id),
                state: "running".into(),
                deployment: None,
            })
            .collect();
        out.extend(self.leftover.lock().unwrap().iter().cloned());
        Ok(out)
    }
    async fn reap_orphans(&self, deployment: &str, live: &HashSet<TaskId>) -> Result<Vec<String>> {
        let mut left = self.leftover.lock().unwrap();
        let mut reaped = Vec::new();
        left.retain(|c| {
            let keep = !c.belongs_to(deployment) || c.task.is_some_and(|t| live.contains(&t));
            if !keep {
                reaped.push(c.id.clone());
            }
            keep
        });
        Ok(reaped)
    }
}

/// Mints tokens and records what it revokes.
#[derive(Debug, Default)]
struct Revoker(std::sync::Mutex<Vec<String>>);

#[async_trait]
impl TokenAuthority for Revoker {
    fn mint(&self, _: &Claims) -> Result<String> {
        Ok("token".into())
    }
    async fn verify(&self, _: &str) -> Result<Claims> {
        Err(Error::Unauthenticated("not here".into()))
    }
    async fn revoke(&self, jti: &str, _: i64) -> Result<()> {
        self.0.lock().unwrap().push(jti.to_string());
        Ok(())
    }
}

/// A replica over the fixture's stores.
fn replica(
    f: &Fixture,
    worker: &str,
    roles: &[Role],
    lease: Duration,
    runtime: Arc<dyn ContainerRuntime>,
    tokens: Arc<dyn TokenAuthority>,
) -> Engine {
    Engine::builder()
        .objects(f.objects.clone())
        .files(f.files.clone())
        .tasks(f.tasks.clone())
        .runtime(runtime)
        .tokens(tokens)
        .config(EngineConfig {
            use_entrypoint: false,
            worker_id: worker.into(),
            lease,
            poll_interval: Duration::from_millis(20),
            roles: roles.iter().copied().collect(),
            tick_interval: Duration::from_secs(3600),
            ..EngineConfig::default()
        })
        .build()
        .unwrap()
}

/// Poll `check` until it holds, for up to 5 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Claim the oldest queued task for `worker` with a lease until `until`.
async fn claim_as(f: &Fixture, worker: &str, until: Timestamp) -> Task {
    let now = Timestamp::now();
    let mut got = f.tasks.claim_tasks(worker, 1, now, until).await.unwrap();
    assert_eq!(got.len(), 1);
    got.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_a_dead_worker_are_recovered_by_a_live_one_and_run_to_completion() {
    let f = fixture().await;
    let now = Timestamp::now();
    // Left by a worker that died: one lease already over, one that ends in a moment, each with a
    // container of the dead worker's still there; and a task that is not idempotent.
    let _ = f.submit_one("download", &[]).await;
    let over = claim_as(&f, "dead", now.plus_secs(-1)).await;
    assert_eq!(over.attempts, 1);
    let _ = f.submit_one("download", &[]).await;
    let soon = claim_as(&f, "dead", now.plus_millis(400)).await;
    f.host("a.example", Some(1)).await;
    let _ = f.submit_one("dns", &["a.example"]).await;
    let failed = claim_as(&f, "dead", now.plus_secs(-1)).await;
    let mut p = TaskPatch::to(TaskState::Running);
    p.token = Some(TaskToken {
        jti: "jti-dead".into(),
        exp: 4_000_000_000,
    });
    f.tasks
        .finish_leased(failed.id, "dead", now.plus_secs(-2), p)
        .await
        .unwrap();
    let runtime = Held::new(Duration::from_millis(30));
    for t in [&over, &soon] {
        runtime.leftover.lock().unwrap().push(ManagedContainer {
            id: format!("dead-{}", t.id),
            name: "dead".into(),
            task: Some(t.id),
            state: "running".into(),
            deployment: None,
        });
    }
    let live = replica(
        &f,
        "live",
        &Role::ALL,
        Duration::from_millis(300),
        runtime.clone(),
        Arc::new(Revoker::default()),
    );
    let rec = live.start().await.unwrap();
    assert_eq!(rec.requeued, vec![over.id], "the lease that ended");
    assert_eq!(rec.failed, vec![failed.id]);
    assert_eq!(rec.revoked, 1);
    assert!(f.tasks.is_token_revoked("jti-dead").await.unwrap());
    assert_eq!(
        rec.reaped,
        vec![format!("dead-{}", over.id)],
        "the container of the task whose lease ended, not the one whose lease lasts"
    );
    let got = live
        .wait_for(over.id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (got.state, got.attempts, got.lease.clone()),
        (TaskState::Completed, 2, None),
        "{got:?}"
    );
    // The other lease ends while the live worker runs: its periodic pass recovers it, reaps the
    // dead worker's container and runs the task again.
    let got = live
        .wait_for(soon.id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (got.state, got.attempts),
        (TaskState::Completed, 2),
        "{got:?}"
    );
    eventually("the dead worker's last container is reaped", async || {
        runtime.leftover.lock().unwrap().is_empty()
    })
    .await;
    let failed = f.tasks.get_task(failed.id).await.unwrap().unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert!(
        failed.reason.as_deref().unwrap().contains("lease"),
        "{:?}",
        failed.reason
    );
    // The heartbeat says who runs.
    let replicas = f.tasks.list_replicas().await.unwrap();
    assert_eq!(replicas.len(), 1);
    assert_eq!(replicas[0].id, "live");
    live.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_was_recovered_elsewhere_writes_nothing() {
    let f = fixture().await;
    // The container ends before the next renewal: the old holder's end is refused.
    let runtime = Held::new(Duration::from_millis(300));
    let a = replica(
        &f,
        "a",
        &[Role::Worker],
        Duration::from_secs(30),
        runtime.clone(),
        Arc::new(Revoker::default()),
    );
    a.start().await.unwrap();
    let t = f.submit_one("download", &[]).await;
    eventually("the container starts", async || runtime.started(t.id)).await;
    // Another replica saw the lease end (a stall of worker a longer than its lease).
    let later = Timestamp::now().plus_secs(3600);
    let got = f.tasks.recover_expired(later, &[], None, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    eventually("the container ends", async || {
        lock(&a.inner.running).is_empty()
    })
    .await;
    let got = f.tasks.get_task(t.id).await.unwrap().unwrap();
    assert_eq!(got.state, TaskState::Failed, "not completed by worker a");
    assert!(got.reason.as_deref().unwrap().contains("lease"), "{got:?}");
    a.shutdown(Duration::from_secs(1)).await;

    // The container still runs at the next renewal: it is stopped.
    let runtime = Held::new(Duration::from_secs(60));
    let b = replica(
        &f,
        "b",
        &[Role::Worker],
        Duration::from_millis(300),
        runtime.clone(),
        Arc::new(Revoker::default()),
    );
    b.start().await.unwrap();
    let t = f.submit_one("download", &[]).await;
    eventually("the container starts", async || runtime.started(t.id)).await;
    let later = Timestamp::now().plus_secs(3600);
    assert_eq!(
        f.tasks
            .recover_expired(later, &[], None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    eventually("the container is stopped", async || runtime.cancelled(t.id)).await;
    eventually("the worker lets go", async || {
        lock(&b.inner.running).is_empty()
    })
    .await;
    let got = f.tasks.get_task(t.id).await.unwrap().unwrap();
    assert_eq!(got.state, TaskState::Failed, "{got:?}");
    assert!(got.reason.as_deref().unwrap().contains("lease"), "{got:?}");
    b.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_through_another_replica_stops_the_container() {
    let f = fixture().await;
    let runtime = Held::new(Duration::from_secs(60));
    let api_tokens = Arc::new(Revoker::default());
    let api = replica(
        &f,
        "api-1",
        &[Role::Api],
        Duration::from_millis(300),
        Arc::new(NotStarted),
        api_tokens.clone(),
    );
    let worker = replica(
        &f,
        "worker-1",
        &[Role::Worker],
        Duration::from_millis(300),
        runtime.clone(),
        Arc::new(Revoker::default()),
    );
    api.start().await.unwrap();
    worker.start().await.unwrap();
    let t = api.submit(f.req("download", &[])).await.unwrap().remove(0);
    eventually("the worker runs it", async || runtime.started(t.id)).await;
    let running = f.tasks.get_task(t.id).await.unwrap().unwrap();
    assert_eq!(
        running.lease.as_ref().map(|l| l.worker.as_str()),
        Some("worker-1"),
        "the API replica runs nothing"
    );
    eventually("the token is on the record", async || {
        f.tasks
            .get_task(t.id)
            .await
            .unwrap()
            .unwrap()
            .token
            .is_some()
    })
    .await;
    let jti = f
        .tasks
        .get_task(t.id)
        .await
        .unwrap()
        .unwrap()
        .token
        .unwrap()
        .jti;
    let c = api.cancel(&f.org, t.id).await.unwrap();
    assert_eq!((c.state, c.lease), (TaskState::Cancelled, None));
    assert!(
        api_tokens.0.lock().unwrap().contains(&jti),
        "the API replica revokes the attempt's token"
    );
    eventually("the worker stops the container", async || {
        runtime.cancelled(t.id)
    })
    .await;
    eventually("the worker lets go", async || {
        lock(&worker.inner.running).is_empty()
    })
    .await;
    let got = f.tasks.get_task(t.id).await.unwrap().unwrap();
    assert_eq!(
        (got.state, got.reason.as_deref()),
        (TaskState::Cancelled, Some("cancelled"))
    );
    let replicas = f.tasks.list_replicas().await.unwrap();
    let ids: Vec<_> = replicas.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["api-1", "worker-1"]);
    api.shutdown(Duration::from_secs(1)).await;
    worker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_never_create_two_tasks_for_one_target_in_one_interval() {
    let f = fixture().await;
    for i in 0..40 {
        f.host(&format!("h{i}.example"), Some(2)).await;
    }
    let engines: Vec<Engine> = ["s1", "s2"]
        .into_iter()
        .map(|w| {
            replica(
                &f,
                w,
                &[Role::Scheduler],
                Duration::from_secs(30),
                Arc::new(NotStarted),
                Arc::new(NotStarted),
            )
        })
        .collect();
    for round in 0..10 {
        schedule_over_all_hostnames(&f, "dns", 3600).await;
        let now = Timestamp::now();
        // The same instant, and one a moment later, as two replicas' clocks would have it.
        let (a, b) = (engines[0].clone(), engines[1].clone());
        let later = now.plus_millis(round * 50);
        let ta = tokio::spawn(async move { a.tick(now).await });
        let tb = tokio::spawn(async move { b.tick(later).await });
        let (ra, rb) = (ta.await.unwrap().unwrap(), tb.await.unwrap().unwrap());
        assert!(ra.tasks + rb.tasks > 0, "{ra:?} {rb:?}");
    }
    let mut per_target: HashMap<(ScheduleId, String), usize> = HashMap::new();
    for t in f.all_tasks().await {
        for o in &t.input.objects {
            *per_target
                .entry((t.schedule.unwrap(), o.key.to_string()))
                .or_default() += 1;
        }
    }
    assert_eq!(per_target.len(), 10 * 40, "every target of every schedule");
    assert!(
        per_target.values().all(|n| *n == 1),
        "no target twice in one interval"
    );
}

#[test]
fn replicas_are_configured_through_the_environment() {
    let c = EngineConfig::from_lookup(|k| match k {
        "KAT_WORKER_ID" => Some("worker-2@host".into()),
        "KAT_ROLES" => Some("api, worker".into()),
        "KAT_LEASE_SECONDS" => Some("12".into()),
        "KAT_POLL_MS" => Some("100".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(c.worker_id, "worker-2@host");
    assert!(c.has_role(Role::Api) && c.has_role(Role::Worker) && !c.has_role(Role::Scheduler));
    assert_eq!(
        (c.lease, c.poll_interval),
        (Duration::from_secs(12), Duration::from_millis(100))
    );
    let d = EngineConfig::default();
    assert_eq!(
        (d.worker_id.as_str(), d.roles.len(), d.lease.as_secs()),
        (DEFAULT_WORKER_ID, 3, 30)
    );
    for (var, bad) in [
        ("KAT_WORKER_ID", "two words"),
        ("KAT_ROLES", "api,chef"),
        ("KAT_LEASE_SECONDS", "1"),
        ("KAT_POLL_MS", "soon"),
    ] {
        let e = EngineConfig::from_lookup(|k| (k == var).then(|| bad.to_string()))
            .expect_err(var)
            .to_string();
        assert!(e.contains(var), "{var}: {e}");
    }
}

#[tokio::test]
async fn two_processes_with_one_worker_id_are_noticed() {
    let f = fixture().await;
    let one = replica(
        &f,
        "twin",
        &[Role::Worker],
        Duration::from_secs(30),
        Arc::new(NotStarted),
        Arc::new(NotStarted),
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let two = replica(
        &f,
        "twin",
        &[Role::Worker],
        Duration::from_secs(30),
        Arc::new(NotStarted),
        Arc::new(NotStarted),
    );
    let mine = one.replica_info();
    f.tasks.heartbeat(mine.clone()).await.unwrap();
    assert!(!one.check_twin(mine.last_seen).await, "its own heartbeat");
    tokio::time::sleep(Duration::from_millis(5)).await;
    f.tasks.heartbeat(two.replica_info()).await.unwrap();
    assert!(one.check_twin(mine.last_seen).await, "another process's");
}
