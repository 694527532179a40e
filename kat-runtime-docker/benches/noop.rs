//! Create-to-removed time of a no-op container (`true` in `kat-busybox:latest`), three ways, in one run:
//!
//! - `kat_run`: [`DockerRuntime::run`] (hardened spec, attach, deadline, removal);
//! - `bollard_raw`: the bare bollard calls create, start, wait, remove;
//! - `docker_cli`: `docker run --rm --network none kat-busybox:latest true` as a spawned process.
//!
//! Prints the median of each and our overhead over the raw calls (target: under 15 ms at the median).
//! Needs `scripts/engines.sh docker && scripts/test-images.sh`; without an engine it says so and does nothing.
//! Sample counts are small so that it finishes in a minute or two: `cargo bench -p kat-runtime-docker`.

use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use futures::StreamExt;
use kat_core::runtime::{CancellationToken, ContainerRuntime, ContainerSpec};
use kat_runtime_docker::DockerRuntime;
use kat_runtime_engine::testing::{Samples, print_medians, rotate};

const IMAGE: &str = "kat-busybox:latest";

async fn kat_run(rt: &DockerRuntime) {
    let spec = ContainerSpec::new("kat-bench-noop", IMAGE, ["true"]);
    let o = rt
        .run(spec, CancellationToken::new())
        .await
        .expect("kat run of `true`");
    assert!(o.success(), "{o:?}");
}

async fn bollard_raw(rt: &DockerRuntime, n: u64) {
    let docker = rt.docker();
    let name = format!("kat-bench-raw-{}-{n}", std::process::id());
    let body = ContainerCreateBody {
        image: Some(IMAGE.to_string()),
        cmd: Some(vec!["true".to_string()]),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .expect("create")
        .id;
    docker.start_container(&id, None).await.expect("start");
    let mut wait = docker.wait_container(&id, None);
    while let Some(r) = wait.next().await {
        r.expect("wait");
    }
    docker
        .remove_container(
            &id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .expect("remove");
}

async fn docker_cli() {
    let status = tokio::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none", IMAGE, "true"])
        .status()
        .await
        .expect("spawn docker");
    assert!(status.success(), "docker run failed: {status}");
}

fn bench(c: &mut Criterion) {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rt = match tokio_rt.block_on(async {
        let rt = DockerRuntime::connect().await?;
        rt.docker()
            .inspect_image(IMAGE)
            .await
            .map_err(|e| kat_core::Error::backend("docker", e.to_string(), false))?;
        Ok::<_, kat_core::Error>(rt)
    }) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!(
                "noop bench SKIPPED: {e}; run scripts/engines.sh docker && scripts/test-images.sh"
            );
            return;
        }
    };

    // 1. Interleaved rounds: each round runs the three variants in a rotating order, so that drift and the
    //    noise of a shared machine hit all three alike. The medians printed at the end come from here.
    let rounds: usize = std::env::var("KAT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let samples = [Samples::default(), Samples::default(), Samples::default()];
    tokio_rt.block_on(async {
        // Warm-up: image layers, the helper connections, the first container of each kind.
        kat_run(&rt).await;
        bollard_raw(&rt, 0).await;
        docker_cli().await;
        rotate(rounds, &samples, |variant, round| {
            let rt = &rt;
            async move {
                match variant {
                    0 => kat_run(rt).await,
                    1 => bollard_raw(rt, round as u64 + 1).await,
                    _ => docker_cli().await,
                }
            }
        })
        .await;
    });
    let [kat, raw, cli] = &samples;

    // 2. Criterion's own statistics, one variant after the other (small samples).
    let mut group = c.benchmark_group("noop_container");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("kat_run", |b| {
        b.to_async(&tokio_rt).iter(|| kat_run(&rt));
    });
    let mut n = 1_000_000u64;
    group.bench_function("bollard_raw", |b| {
        b.to_async(&tokio_rt).iter(|| {
            n += 1;
            bollard_raw(&rt, n)
        });
    });
    group.bench_function("docker_cli", |b| {
        b.to_async(&tokio_rt).iter(docker_cli);
    });
    group.finish();

    print_medians(
        &format!(
            "median create-to-removed time of a no-op container ({IMAGE}, `true`), {rounds} rounds in rotation"
        ),
        &[
            ("kat_run (DockerRuntime::run)", kat),
            ("bollard_raw (create/start/wait/rm)", raw),
            ("docker_cli (docker run --rm)", cli),
        ],
    );
    if let Some(ms) = kat.paired_median_difference_ms(raw) {
        println!("  kat_run - bollard_raw, paired per round: median {ms:+.1} ms (target < 15 ms)");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
