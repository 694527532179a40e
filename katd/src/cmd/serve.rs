//! `katd serve`: a deployment of `kat::deploy` on the chosen store and runtime, until Ctrl-C or SIGTERM.

use std::path::Path;
use std::time::Duration;

use kat::core::Error;
use kat::core::engine::EngineConfig;
use kat::core::org::{OrgCode, Organization};
use kat::core::runtime::{EntrypointBinary, NetworkMode};
use kat::deploy::{DeployConfig, Deployment, RuntimeChoice, StoreChoice};

use crate::ServeArgs;
use crate::secret::{load_or_create_secret, write_private};

/// How long the operator token of `--token-out` lives.
const OPERATOR_TOKEN_TTL: Duration = Duration::from_secs(7 * 86_400);

/// Start the deployment, say what start-up did, write the operator token if asked, serve until a
/// signal, then stop cleanly.
///
/// The signal handlers come first: a SIGTERM or Ctrl-C during start-up lets start-up finish (so
/// that nothing it creates, such as the entrypoint volume's helper container, is left behind) and
/// then stops cleanly; a second one exits at once.
pub(crate) async fn run(args: ServeArgs) -> Result<(), Error> {
    let stop = stop_on_signal()?;
    let token_out = args.token_out.clone();
    let cfg = deploy_config(args)?;
    let first_org = cfg.organizations.first().map(|o| o.code.clone());
    let d = Deployment::start(cfg).await?;
    if *stop.borrow() {
        println!("katd: stopping (a signal came during start-up)");
        d.shutdown().await;
        return Ok(());
    }
    print_started(&d);
    if let (Some(path), Some(org)) = (token_out, first_org) {
        write_operator_token(&d, &org, &path)?;
    }
    let mut stopped = stop;
    let _ = stopped.wait_for(|s| *s).await;
    println!("katd: stopping");
    d.shutdown().await;
    Ok(())
}

/// The deployment the arguments and the environment describe.
fn deploy_config(args: ServeArgs) -> Result<DeployConfig, Error> {
    let runtime = runtime_choice(args.runtime.as_deref())?;
    let store = store_choice(args.store.as_deref(), &args.data)?;
    let sled_cache = crate::cmd::sled_cache_mib(args.sled_cache_mib.as_deref(), &store)?;
    let policy = crate::cmd::load_policy(args.policy.as_deref())?;
    let secret = load_or_create_secret(Some(&args.data))?;
    let mut cfg = DeployConfig::new(&args.data, args.listen, secret);
    cfg.runtime = runtime;
    #[cfg(feature = "sled")]
    if let Some(mib) = sled_cache {
        cfg.sled.cache_capacity_bytes = mib << 20;
    }
    #[cfg(not(feature = "sled"))]
    let _ = sled_cache;
    cfg.engine = engine_config(&args, &store)?;
    cfg.store = store;
    cfg.plugin_files = args.plugins;
    cfg.enable_new_plugins = !args.new_plugins_disabled;
    cfg.policy = policy;
    cfg.finding_types = args.finding_types;
    cfg.rules_file = args.rules;
    cfg.organizations = args
        .orgs
        .iter()
        .map(|o| parse_org(o))
        .collect::<Result<_, _>>()?;
    Ok(cfg)
}

/// `--runtime` / `KAT_RUNTIME`; unset or empty: the default (docker).
fn runtime_choice(value: Option<&str>) -> Result<RuntimeChoice, Error> {
    match value.filter(|v| !v.trim().is_empty()) {
        None => Ok(RuntimeChoice::default()),
        Some(v) => v.parse(),
    }
}

/// `--store` / `KAT_STORE`; unset or empty: sled in the data directory.
fn store_choice(value: Option<&str>, data: &Path) -> Result<StoreChoice, Error> {
    let value = value.filter(|v| !v.trim().is_empty()).unwrap_or("sled");
    StoreChoice::parse(value, data)
}

/// The engine's settings: the seed's variables (`EngineConfig::from_env`), with what `serve` decides on
/// top of them.
fn engine_config(args: &ServeArgs, store: &StoreChoice) -> Result<EngineConfig, Error> {
    let mut engine = EngineConfig::from_env()?;
    if std::env::var("KAT_DEPLOYMENT").is_err() {
        engine.deployment = match store {
            // Replicas of one database are one deployment: any worker reaps what a dead one left.
            StoreChoice::Postgres(url) => kat::deploy::shared_deployment_name(url),
            // Named after the data directory: katds sharing an engine leave each other's containers alone.
            _ => kat::deploy::deployment_name(&args.data),
        };
    }
    if std::env::var("OPENKAT_HOST")
        .map(|v| v.is_empty())
        .unwrap_or(true)
    {
        engine.api_url = String::new(); // derived from the listening address
    }
    if let Some(url) = args.api_url.as_deref().filter(|u| !u.trim().is_empty()) {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::invalid(
                "--api-url",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        engine.api_url = url.trim_end_matches('/').to_string();
    }
    if let Some(roles) = args.roles.as_deref() {
        engine.roles = kat::core::replica::Role::parse_list(roles)
            .map_err(|e| Error::invalid("--role", e.to_string()))?;
    }
    if let Some(id) = args.worker_id.as_deref() {
        kat::core::engine::check_worker_id(id)
            .map_err(|e| Error::invalid("--worker-id", e.to_string()))?;
        engine.worker_id = id.to_string();
    }
    if store.is_shared() && engine.worker_id == EngineConfig::default().worker_id {
        tracing::warn!(
            worker_id = %engine.worker_id,
            "a replica on a shared store with the default worker id: give each replica its own (--worker-id)"
        );
    }
    engine.entrypoint_binary = args
        .entrypoint
        .clone()
        .map(|path| EntrypointBinary { path });
    engine.concurrency = args.concurrency;
    engine.tick_interval = Duration::from_secs(args.tick.max(1));
    if std::env::var("DOCKER_NETWORK").is_err() && args.listen.ip().is_loopback() {
        // An API on loopback is only reachable from containers on the host's network.
        engine.network = NetworkMode::Host;
    }
    Ok(engine)
}

/// `code` or `code:Name`.
fn parse_org(s: &str) -> Result<Organization, Error> {
    let (code, name) = s.split_once(':').unwrap_or((s, s));
    Ok(Organization::new(OrgCode::new(code)?, name.to_string()))
}

/// The line that says where katd serves and what start-up did.
fn print_started(d: &Deployment) {
    let s = d.sync_report();
    let r = d.recovery();
    println!(
        "katd: serving {} (plugins: {} added, {} updated, {} unchanged, {} disabled as removed, {} refused by the policy; recovery: {} failed, {} requeued, {} containers reaped)",
        d.api_url(),
        s.added.len(),
        s.updated.len(),
        s.unchanged.len(),
        s.removed.len(),
        s.refused.len(),
        r.failed.len(),
        r.requeued.len(),
        r.reaped.len()
    );
    for (plugin, reason) in &s.refused {
        println!("katd: refused (will not run): {reason}; grant it in --policy to run {plugin}");
    }
}

/// Write an operator token for `org` to `path` (mode 0600) and say so.
fn write_operator_token(d: &Deployment, org: &OrgCode, path: &Path) -> Result<(), Error> {
    let token = d.operator_token(org, OPERATOR_TOKEN_TTL)?;
    write_private(path, token.as_bytes())?;
    println!(
        "katd: operator token for {org} written to {}",
        path.display()
    );
    Ok(())
}

/// Install the SIGTERM and SIGINT handlers now; the receiver turns true at the first signal, and a
/// second one exits the process at once (status 130).
fn stop_on_signal() -> Result<tokio::sync::watch::Receiver<bool>, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let installed = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| {
            Error::invalid("signal", format!("cannot install the {name} handler: {e}"))
        })
    };
    let mut term = installed(SignalKind::terminate(), "SIGTERM")?;
    let mut int = installed(SignalKind::interrupt(), "SIGINT")?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut seen = 0u32;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            seen += 1;
            if seen == 1 {
                let _ = tx.send(true);
            } else {
                eprintln!("katd: a second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_runtime_or_an_empty_one_is_docker() {
        assert_eq!(runtime_choice(None).ok(), Some(RuntimeChoice::Docker));
        assert_eq!(runtime_choice(Some("")).ok(), Some(RuntimeChoice::Docker));
        assert_eq!(
            runtime_choice(Some("podman")).ok(),
            Some(RuntimeChoice::Podman)
        );
        let e = runtime_choice(Some("rkt")).expect_err("rkt").to_string();
        assert!(e.contains("\"rkt\"") && e.contains("docker, podman"), "{e}");
    }

    #[test]
    fn no_store_or_an_empty_one_is_sled_in_the_data_directory() {
        let data = Path::new("/srv/kat");
        assert_eq!(
            store_choice(None, data).ok(),
            Some(StoreChoice::Sled(data.into()))
        );
        assert_eq!(
            store_choice(Some(" "), data).ok(),
            Some(StoreChoice::Sled(data.into()))
        );
        assert_eq!(
            store_choice(Some("memory"), data).ok(),
            Some(StoreChoice::Memory)
        );
        let e = store_choice(Some("redis"), data)
            .expect_err("redis")
            .to_string();
        assert!(e.contains("\"redis\"") && e.contains("memory"), "{e}");
    }

    #[test]
    fn organizations_take_an_optional_name() {
        let o = parse_org("acme:Acme Corp").expect("org");
        assert_eq!((o.code.as_str(), o.name.as_str()), ("acme", "Acme Corp"));
        let o = parse_org("acme").expect("org");
        assert_eq!((o.code.as_str(), o.name.as_str()), ("acme", "acme"));
    }
}
