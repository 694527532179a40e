//! Create-to-removed time of a no-op container (`true` in `kat-busybox:latest`), three ways, in one run:
//!
//! - `kat_run`: [`PodmanRuntime::run`] (hardened spec, libpod attach, wait, deadline, removal);
//! - `libpod_raw`: the bare libpod calls create (minimal spec), start, wait, remove, no attach;
//! - `podman_cli`: `podman run --rm --network none kat-busybox:latest true` as a spawned process, with the
//!   service's `CONTAINERS_CONF` (the same runc and ulimits).
//!
//! Prints the median of each, from rounds that run the variants in rotation so that the noise of a shared
//! machine hits all alike (and the paired differences), after criterion's own statistics. Needs `eval "$(scripts/engines.sh podman)" &&
//! scripts/test-images.sh`; without a service it says so and does nothing. `KAT_BENCH_ROUNDS` (default 25).
//! `cargo bench -p kat-runtime-podman --bench noop`.

use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use kat_core::runtime::{CancellationToken, ContainerRuntime, ContainerSpec};
use kat_runtime_engine::testing::{Samples, print_medians, rotate};
use kat_runtime_podman::PodmanRuntime;
use podman_api::models::Namespace;
use podman_api::opts::{ContainerCreateOpts, ContainerDeleteOpts, ContainerWaitOpts};

const IMAGE: &str = "kat-busybox:latest";
/// The configuration `scripts/engines.sh podman` writes and starts the service with.
const KAT_CONTAINERS_CONF: &str = "/run/kat-podman/containers.conf";

async fn kat_run(rt: &PodmanRuntime) {
    let spec = ContainerSpec::new("kat-bench-noop", IMAGE, ["true"]);
    let o = rt
        .run(spec, CancellationToken::new())
        .await
        .expect("kat run of `true`");
    assert!(o.success(), "{o:?}");
}

/// podman-api's own create (its builder is fine for a plain container; no network, like the others),
/// start, wait (10 ms polling), remove.
async fn libpod_raw(rt: &PodmanRuntime, n: u64) {
    let containers = rt.podman().containers();
    let created = containers
        .create(
            &ContainerCreateOpts::builder()
                .name(format!("kat-bench-raw-{}-{n}", std::process::id()))
                .image(IMAGE)
                .command(["true"])
                .net_namespace(Namespace {
                    nsmode: Some("none".into()),
                    value: None,
                })
                .build(),
        )
        .await
        .expect("create");
    let c = containers.get(&created.id);
    c.start(None).await.expect("start");
    c.wait(&ContainerWaitOpts::builder().interval("10ms").build())
        .await
        .expect("wait");
    c.delete(&ContainerDeleteOpts::builder().force(true).build())
        .await
        .expect("remove");
}

fn containers_conf() -> String {
    std::env::var("CONTAINERS_CONF").unwrap_or_else(|_| KAT_CONTAINERS_CONF.to_string())
}

async fn podman_cli(conf: &str) {
    let out = tokio::process::Command::new("podman")
        .args(["run", "--rm", "--network", "none", IMAGE, "true"])
        .env("CONTAINERS_CONF", conf)
        .output()
        .await
        .expect("spawn podman");
    assert!(
        out.status.success(),
        "podman run failed: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn bench(c: &mut Criterion) {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rt = match tokio_rt.block_on(async {
        let rt = PodmanRuntime::connect().await?;
        match rt.podman().images().get(IMAGE).exists().await {
            Ok(true) => Ok(rt),
            Ok(false) => Err(format!("{IMAGE} is not in Podman's store")),
            Err(e) => Err(e.to_string()),
        }
        .map_err(|e| kat_core::Error::backend("podman", e, false))
    }) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!(
                "noop bench SKIPPED: {e}; run eval \"$(scripts/engines.sh podman)\" && scripts/test-images.sh"
            );
            return;
        }
    };
    let conf = containers_conf();

    // 1. Rounds running the three variants in a rotating order. The medians printed at the end come from here.
    let rounds: usize = std::env::var("KAT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let samples = [Samples::default(), Samples::default(), Samples::default()];
    tokio_rt.block_on(async {
        // Warm-up: the first container of each kind.
        kat_run(&rt).await;
        libpod_raw(&rt, 0).await;
        podman_cli(&conf).await;
        rotate(rounds, &samples, |variant, round| {
            let (rt, conf) = (&rt, &conf);
            async move {
                match variant {
                    0 => kat_run(rt).await,
                    1 => libpod_raw(rt, round as u64 + 1).await,
                    _ => podman_cli(conf).await,
                }
            }
        })
        .await;
    });
    let [kat, raw, cli] = &samples;

    // 2. Criterion's own statistics, one variant after the other (small samples).
    let mut group = c.benchmark_group("noop_container_podman");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("kat_run", |b| {
        b.to_async(&tokio_rt).iter(|| kat_run(&rt));
    });
    let mut n = 1_000_000u64;
    group.bench_function("libpod_raw", |b| {
        b.to_async(&tokio_rt).iter(|| {
            n += 1;
            libpod_raw(&rt, n)
        });
    });
    group.bench_function("podman_cli", |b| {
        b.to_async(&tokio_rt).iter(|| podman_cli(&conf));
    });
    group.finish();

    print_medians(
        &format!(
            "median create-to-removed time of a no-op container ({IMAGE}, `true`), {rounds} rounds in rotation"
        ),
        &[
            ("kat_run (PodmanRuntime::run)", kat),
            ("libpod_raw (create/start/wait/rm)", raw),
            ("podman_cli (podman run --rm, same CONTAINERS_CONF)", cli),
        ],
    );
    if let Some(ms) = kat.paired_median_difference_ms(raw) {
        println!("  kat_run - libpod_raw, paired per round: median {ms:+.1} ms");
    }
    if let Some(ms) = kat.paired_median_difference_ms(cli) {
        println!("  kat_run - podman_cli, paired per round: median {ms:+.1} ms");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
