//! Crash safety: a child process (this test binary, re-run in "writer mode") upserts batches of 200
//! hostnames with `FlushEachWrite` and prints `ACK k` after each acknowledged batch; the parent kills
//! it with SIGKILL at random moments, reopens the store and checks that it opens, that every
//! acknowledged batch is whole, that no batch is partly there, and that the indexes and attribution
//! agree with the objects. Then the next child carries on where the last acknowledgement left off.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kat_core::object::{Object, ObjectType};
use kat_core::org::OrgCode;
use kat_core::store::{ObjectQuery, ObjectStore};
use kat_core::task::TaskId;
use kat_store_sled::{SledOptions, SledStore};

const DIR_ENV: &str = "KAT_SLED_CRASH_CHILD_DIR";
const START_ENV: &str = "KAT_SLED_CRASH_CHILD_START";
const BATCH: usize = 200;
const ITERATIONS: usize = 24;

fn org() -> OrgCode {
    OrgCode::new("crash").expect("org")
}

fn name(k: u64, i: usize) -> String {
    format!("b{k}-{i}.example")
}

fn batch(k: u64) -> Vec<Object> {
    (0..BATCH)
        .map(|i| {
            Object::from_json(
                ObjectType::Hostname,
                &serde_json::json!({ "name": name(k, i) }),
            )
            .expect("hostname")
        })
        .collect()
}

/// Writer mode: only does something when the parent runs this binary with `DIR_ENV` set.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let start: u64 = std::env::var(START_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store =
            SledStore::open(std::path::Path::new(&dir), SledOptions::default()).expect("open");
        // Bounded so that a parent that fails to kill us cannot leave us running for ever.
        for k in start..start + 10_000 {
            store
                .upsert(&org(), batch(k), Some(TaskId::new()))
                .await
                .expect("upsert");
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "ACK {k}").expect("stdout");
            out.flush().expect("stdout");
        }
    });
}

/// A small deterministic generator for the kill delays (the seed is printed to reproduce a run).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn killed_writers_leave_whole_batches() {
    if std::env::var(DIR_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = std::env::var("KAT_SLED_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("crash test seed {seed} (set KAT_SLED_CRASH_SEED to repeat)");
    let mut rng = XorShift(seed);
    let exe = std::env::current_exe().expect("current exe");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let mut next: u64 = 0;
    let mut acked_total = 0u64;
    let mut mid_batch_kills = 0;
    for iteration in 0..ITERATIONS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .env(START_ENV, next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the writer");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(k) = line
                    .strip_prefix("ACK ")
                    .and_then(|k| k.parse::<u64>().ok())
                {
                    let _ = tx.send(k);
                }
            }
        });
        // Wait for a first acknowledgement most of the time (so that batches do get written), then
        // a random delay; sometimes kill before anything is acknowledged.
        if iteration % 4 != 0 {
            let _ = rx.recv_timeout(Duration::from_secs(30));
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 400));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the writer was killed, not finished");
        reader.join().expect("reader");
        let acks: Vec<u64> = rx.try_iter().collect();
        let last_ack = acks.iter().copied().max();
        acked_total += acks.len() as u64;

        rt.block_on(async {
            let store = SledStore::open(dir.path(), SledOptions::default())
                .expect("the store opens cleanly after SIGKILL");
            // One pass over all hostnames, counted per batch.
            let mut q = ObjectQuery::new(org(), ObjectType::Hostname);
            q.limit = 0;
            let all = store.query(&q).await.expect("list");
            let highest = last_ack.unwrap_or(next).max(next) + 2;
            let mut per_batch = vec![0usize; highest as usize + 1];
            for o in &all.items {
                let n = o.key.as_str().trim_start_matches("internet|");
                let k: u64 = n
                    .strip_prefix('b')
                    .and_then(|r| r.split('-').next())
                    .and_then(|k| k.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected object {n}"));
                assert!(k <= highest, "batch {k} was never started");
                per_batch[k as usize] += 1;
            }
            for (k, c) in per_batch.iter().enumerate() {
                assert!(
                    *c == 0 || *c == BATCH,
                    "iteration {iteration}: batch {k} is partly there ({c} of {BATCH})"
                );
                if last_ack.is_some_and(|a| k as u64 <= a) || (k as u64) < next {
                    assert_eq!(
                        *c, BATCH,
                        "iteration {iteration}: acknowledged batch {k} lost"
                    );
                }
            }
            let newest_full = per_batch.iter().rposition(|c| *c == BATCH);
            if newest_full.is_some_and(|k| last_ack.is_none_or(|a| k as u64 > a)) {
                mid_batch_kills += 1;
            }
            // The name index agrees: every object of the newest batches is found by name, and the
            // batch after them by none.
            for k in highest.saturating_sub(3)..=highest {
                let present = per_batch[k as usize] == BATCH;
                for i in (0..BATCH).step_by(if present { 1 } else { 20 }) {
                    let q = ObjectQuery::new(org(), ObjectType::Hostname)
                        .filter("name", &[name(k, i).as_str()]);
                    let got = store.query(&q).await.expect("by name").count;
                    assert_eq!(
                        got,
                        u64::from(present),
                        "iteration {iteration}: {} by name",
                        name(k, i)
                    );
                }
            }
            let report = store.verify().await.expect("verify");
            assert!(
                report.is_consistent(),
                "iteration {iteration}: {:?}",
                report.problems
            );
            // Each batch's task wrote its 200 hostnames and saw the `internet` network again.
            let full = per_batch.iter().filter(|c| **c == BATCH).count() as u64;
            assert_eq!(
                report.attributions,
                all.count + full,
                "one writing task per object"
            );
            assert_eq!(
                report.objects,
                all.count + u64::from(full > 0),
                "hostnames and their network"
            );
            // Carry on after the newest batch on disk (acknowledged or not), so that no batch is
            // written twice by two tasks.
            next = newest_full
                .map_or(next, |k| k as u64 + 1)
                .max(last_ack.map_or(next, |a| a + 1));
        });
    }
    eprintln!(
        "{ITERATIONS} kills, {acked_total} acknowledged batches, {mid_batch_kills} kills after a batch \
         was written but before its ACK was read, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        acked_total >= ITERATIONS as u64 / 2,
        "the writers made progress"
    );
}
