//! `katd`: the kat-rs daemon and operator tool, assembled from sled, Docker and the HTTP API.
//!
//! ```text
//! katd serve   --data /var/lib/kat --plugins plugins/plugins.json --org acme
//! katd token   --data /var/lib/kat --org acme --admin            # prints a token for curl
//! katd declare --type hostname example.com --scan-level 2        # KAT_API and KAT_TOKEN from the environment
//! katd run     dns example.com                                   # queue a task and follow it
//! katd tasks | katd objects hostname | katd files
//! katd sync    --data /var/lib/kat --plugins plugins/plugins.json   (while katd is not running)
//! katd plan    --plugins plugins/plugins.json --target example.com  (no engine needed)
//! ```
//!
//! `serve` reads the seed's variables: `ENTRYPOINT_VOLUME`, `OPENKAT_HOST` (the API as containers reach
//! it), `DOCKER_NETWORK`, `PLUGIN_TIMEOUT` (minutes), and `KAT_JWT_SECRET` / `KAT_JWT_SECRET_FILE` (else a
//! secret is generated once into `<data>/jwt.secret`), and `KAT_DEPLOYMENT` (its containers' deployment
//! label; default: named after the data directory, so katds sharing an engine reap only their own).

#![forbid(unsafe_code)]

mod client;

// sled allocates on every write; glibc's malloc halves its throughput here (docs/store-sled.md).
// `main` also turns off transparent huge pages, which mimalloc would otherwise use.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kat::core::Error;
use kat::core::engine::EngineConfig;
use kat::core::finding::FindingTypes;
use kat::core::memory::MemoryTaskStore;
use kat::core::object::{ObjectType, canonical_hostname, canonical_ip};
use kat::core::org::{OrgCode, Organization};
use kat::core::permission::Permissions;
use kat::core::plan::{PlanInput, Stdin, Target, plan};
use kat::core::plugin::{DEFAULT_BATCH_SIZE, PluginDef, sync};
use kat::core::runtime::{EntrypointBinary, NetworkMode};
use kat::core::store::{FileId, PluginCatalog};
use kat::deploy::{DeployConfig, Deployment};
use kat::http::JwtAuthority;
use kat::store_sled::{SledOptions, SledStore};

use client::Client;

/// The kat-rs daemon and operator tool.
#[derive(Debug, Parser)]
#[command(name = "katd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ApiArgs {
    /// The API's base URL.
    #[arg(long, env = "KAT_API", default_value = "http://127.0.0.1:8000/api/v1")]
    api: String,
    /// An operator token (see `katd token`).
    #[arg(long, env = "KAT_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API and run plugins: sled + Docker + the HTTP API, until Ctrl-C or SIGTERM.
    Serve {
        /// Data directory (sled database and file contents).
        #[arg(long, env = "KAT_DATA")]
        data: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        /// Plugin definition files, synced at start.
        #[arg(long = "plugins")]
        plugins: Vec<PathBuf>,
        /// Start plugins that are new to the catalogue disabled.
        #[arg(long)]
        new_plugins_disabled: bool,
        /// A finding_types.json to store in every organization.
        #[arg(long = "finding-types")]
        finding_types: Option<PathBuf>,
        /// Organizations to create if missing (`code` or `code:Name`).
        #[arg(long = "org")]
        orgs: Vec<String>,
        /// The static entrypoint binary to put into the entrypoint volume at start.
        #[arg(long, env = "KAT_ENTRYPOINT_BIN")]
        entrypoint: Option<PathBuf>,
        /// How many tasks run at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Seconds between scheduler ticks.
        #[arg(long, default_value_t = 10)]
        tick: u64,
        /// Write an operator token for the first --org here (mode 0600).
        #[arg(long)]
        token_out: Option<PathBuf>,
    },
    /// Mint a token for a person or program, to use the API with curl.
    Token {
        /// Data directory (for its jwt.secret, unless KAT_JWT_SECRET(_FILE) is set).
        #[arg(long, env = "KAT_DATA")]
        data: Option<PathBuf>,
        /// The organization the token may see.
        #[arg(long)]
        org: String,
        /// Every permission, unrestricted.
        #[arg(long, conflicts_with = "permissions")]
        admin: bool,
        /// Permissions as JSON, e.g. '{"objects.view_hostname": {}}'.
        #[arg(long)]
        permissions: Option<String>,
        /// The token's subject name.
        #[arg(long, default_value = "operator")]
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Declare objects (hostnames or IP addresses), optionally with a scan level.
    Declare {
        #[command(flatten)]
        api: ApiArgs,
        /// hostname or ipaddress.
        #[arg(long = "type", default_value = "hostname")]
        object_type: String,
        /// The values.
        #[arg(required = true)]
        values: Vec<String>,
        /// The scan level to declare (0 to 4).
        #[arg(long)]
        scan_level: Option<u8>,
    },
    /// Queue a plugin now over targets (natural keys, names, addresses or file ids) and follow it.
    Run {
        #[command(flatten)]
        api: ApiArgs,
        /// The plugin.
        plugin: String,
        /// The targets (none for a standalone plugin).
        targets: Vec<String>,
        /// Seconds to follow the tasks before giving up waiting (they keep running).
        #[arg(long, default_value_t = 900)]
        wait: u64,
    },
    /// List tasks.
    Tasks {
        #[command(flatten)]
        api: ApiArgs,
        /// Only this state.
        #[arg(long)]
        state: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// List objects of a type.
    Objects {
        #[command(flatten)]
        api: ApiArgs,
        /// The type (hostname, ipaddress, ipport, finding, dnsarecord, ...).
        object_type: String,
        /// Filters `field=value`.
        #[arg(long = "filter")]
        filters: Vec<String>,
        /// How many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print what was found: findings with their risk, and the objects plugins wrote, each with the
    /// plugin and task that found it.
    Report {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List files.
    Files {
        #[command(flatten)]
        api: ApiArgs,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Sync plugin files into a store directly (katd serve must not be running on it).
    Sync {
        /// Data directory.
        #[arg(long, env = "KAT_DATA")]
        data: PathBuf,
        /// Plugin definition files.
        #[arg(long = "plugins", required = true)]
        plugins: Vec<PathBuf>,
        /// Start new plugins disabled.
        #[arg(long)]
        new_plugins_disabled: bool,
    },
    /// Validate plugin files and print how each plugin would run over example targets.
    Plan {
        /// Plugin definition files (JSON lists), loaded together.
        #[arg(long = "plugins", required = true)]
        plugins: Vec<PathBuf>,
        /// A finding_types.json to validate as well.
        #[arg(long = "finding-types")]
        finding_types: Option<PathBuf>,
        /// Example targets: hostnames or IP addresses. Each plugin gets those of the types it takes.
        #[arg(long = "target")]
        targets: Vec<String>,
        /// The example file id given to plugins that take files.
        #[arg(long = "file-id", default_value_t = 1)]
        file_id: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,katd=info,kat=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Huge-page faults inside sled's writes were the API's write p99 (docs/store-sled.md).
    if let Err(e) = kat::store_sled::disable_transparent_huge_pages() {
        tracing::warn!(error = %e, "cannot turn off transparent huge pages; write latency may spike");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("katd: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("katd: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Command) -> Result<(), Error> {
    match cmd {
        Command::Serve {
            data,
            listen,
            plugins,
            new_plugins_disabled,
            finding_types,
            orgs,
            entrypoint,
            concurrency,
            tick,
            token_out,
        } => {
            let secret = load_or_create_secret(Some(&data))?;
            let mut cfg = DeployConfig::new(&data, listen, secret);
            let mut engine = EngineConfig::from_env()?;
            if std::env::var("KAT_DEPLOYMENT").is_err() {
                // Named after the data directory: katds sharing an engine leave each other's containers alone.
                engine.deployment = kat::deploy::deployment_name(&data);
            }
            if std::env::var("OPENKAT_HOST")
                .map(|v| v.is_empty())
                .unwrap_or(true)
            {
                engine.api_url = String::new(); // derived from the listening address
            }
            engine.entrypoint_binary = entrypoint.map(|path| EntrypointBinary { path });
            engine.concurrency = concurrency;
            engine.tick_interval = Duration::from_secs(tick.max(1));
            if std::env::var("DOCKER_NETWORK").is_err() && listen.ip().is_loopback() {
                // An API on loopback is only reachable from containers on the host's network.
                engine.network = NetworkMode::Host;
            }
            cfg.engine = engine;
            cfg.plugin_files = plugins;
            cfg.enable_new_plugins = !new_plugins_disabled;
            cfg.finding_types = finding_types;
            cfg.organizations = orgs
                .iter()
                .map(|o| parse_org(o))
                .collect::<Result<_, _>>()?;
            let first_org = cfg.organizations.first().map(|o| o.code.clone());
            let d = Deployment::start(cfg).await?;
            let s = d.sync_report();
            let r = d.recovery();
            println!(
                "katd: serving {} (plugins: {} added, {} updated, {} unchanged, {} disabled as removed; recovery: {} failed, {} requeued, {} containers reaped)",
                d.api_url(),
                s.added.len(),
                s.updated.len(),
                s.unchanged.len(),
                s.removed.len(),
                r.failed.len(),
                r.requeued.len(),
                r.reaped.len()
            );
            if let (Some(path), Some(org)) = (token_out, first_org) {
                let token = d.operator_token(&org, Duration::from_secs(7 * 86_400))?;
                write_private(&path, token.as_bytes())?;
                println!(
                    "katd: operator token for {org} written to {}",
                    path.display()
                );
            }
            wait_for_signal().await;
            println!("katd: stopping");
            d.shutdown().await;
            Ok(())
        }
        Command::Token {
            data,
            org,
            admin,
            permissions,
            user,
            ttl,
        } => {
            let secret = load_or_create_secret(data.as_deref())?;
            let auth = JwtAuthority::hs256(&secret, Arc::new(MemoryTaskStore::default()))?;
            let perms = match (admin, permissions) {
                (true, _) => kat::http::all_permissions(),
                (false, Some(json)) => {
                    let v: serde_json::Value = serde_json::from_str(&json)
                        .map_err(|e| Error::invalid("--permissions", format!("not JSON: {e}")))?;
                    Permissions::from_json(&v, "--permissions")?
                }
                (false, None) => {
                    return Err(Error::invalid(
                        "--permissions",
                        "give --admin or --permissions '{...}'",
                    ));
                }
            };
            let token = kat::http::mint_operator_token(
                &auth,
                &user,
                OrgCode::new(&org)?,
                perms,
                Duration::from_secs(ttl),
            )?;
            println!("{token}");
            Ok(())
        }
        Command::Declare {
            api,
            object_type,
            values,
            scan_level,
        } => {
            let c = Client::new(&api.api, &api.token)?;
            let ty: ObjectType = object_type.parse()?;
            let field = match ty {
                ObjectType::Hostname => "name",
                ObjectType::IpAddress => "address",
                other => {
                    return Err(Error::invalid(
                        "--type",
                        format!("declare takes hostname or ipaddress, not {other}"),
                    ));
                }
            };
            let list: Vec<serde_json::Value> = values
                .iter()
                .map(|v| serde_json::json!({ field: v }))
                .collect();
            let out = c
                .post(&format!("/objects/{ty}/"), &serde_json::Value::Array(list))
                .await?;
            for o in out.as_array().cloned().unwrap_or_default() {
                let id = o["id"].as_str().unwrap_or_default().to_string();
                if let Some(level) = scan_level {
                    c.patch(
                        &format!("/objects/{ty}/{}/", client::encode(&id)),
                        &serde_json::json!({ "scan_level": level }),
                    )
                    .await?;
                }
                println!(
                    "{ty} {id}{}",
                    scan_level
                        .map(|l| format!(" (scan level {l})"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Run {
            api,
            plugin,
            targets,
            wait,
        } => {
            let c = Client::new(&api.api, &api.token)?;
            let body = serde_json::json!({"type": "plugin", "data": {"plugin_id": plugin, "input_data": targets}});
            let created = c.post("/tasks/", &body).await?;
            let ids: Vec<String> = match &created {
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|t| t["id"].as_str().map(String::from))
                    .collect(),
                one => one["id"].as_str().map(String::from).into_iter().collect(),
            };
            follow(&c, &ids, Duration::from_secs(wait)).await
        }
        Command::Tasks { api, state, limit } => {
            let c = Client::new(&api.api, &api.token)?;
            let mut q = vec![("limit".to_string(), limit.to_string())];
            if let Some(s) = state {
                q.push(("state".into(), s));
            }
            let page = c.get("/tasks/", &q).await?;
            println!(
                "{:<36}  {:<16}  {:<10}  {:>4}  reason",
                "task", "plugin", "state", "exit"
            );
            for t in page["results"].as_array().cloned().unwrap_or_default() {
                println!(
                    "{:<36}  {:<16}  {:<10}  {:>4}  {}",
                    t["id"].as_str().unwrap_or("?"),
                    t["plugin_id"]
                        .as_str()
                        .or(t["data"]["plugin_id"].as_str())
                        .unwrap_or("?"),
                    t["state"].as_str().or(t["status"].as_str()).unwrap_or("?"),
                    t["exit_code"]
                        .as_i64()
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                    t["reason"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        Command::Objects {
            api,
            object_type,
            filters,
            limit,
        } => {
            let c = Client::new(&api.api, &api.token)?;
            let ty: ObjectType = object_type.parse()?;
            let mut q = vec![("limit".to_string(), limit.to_string())];
            for f in filters {
                let (k, v) = f.split_once('=').ok_or_else(|| {
                    Error::invalid("--filter", format!("expected field=value, got {f:?}"))
                })?;
                q.push((k.into(), v.into()));
            }
            let page = c.get(&format!("/objects/{ty}/"), &q).await?;
            println!("{} {ty} object(s)", page["count"]);
            for o in page["results"].as_array().cloned().unwrap_or_default() {
                println!("{}", serde_json::to_string(&o).unwrap_or_default());
            }
            Ok(())
        }
        Command::Report { api } => {
            let c = Client::new(&api.api, &api.token)?;
            report(&c).await
        }
        Command::Files { api, limit } => {
            let c = Client::new(&api.api, &api.token)?;
            let page = c
                .get("/file/", &[("limit".to_string(), limit.to_string())])
                .await?;
            println!(
                "{:>6}  {:<20}  {:>10}  {:<36}  created",
                "id", "type", "size", "task"
            );
            for f in page["results"].as_array().cloned().unwrap_or_default() {
                println!(
                    "{:>6}  {:<20}  {:>10}  {:<36}  {}",
                    f["id"],
                    f["type"].as_str().unwrap_or("?"),
                    f["size"],
                    f["task_id"].as_str().unwrap_or("-"),
                    f["created_at"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        Command::Sync {
            data,
            plugins,
            new_plugins_disabled,
        } => {
            let store = SledStore::open(&data, SledOptions::default())?;
            let defs = PluginDef::load_files(&plugins)?;
            let existing = store.list_plugins().await?;
            let (writes, report) = sync(&existing, &defs, !new_plugins_disabled);
            store.put_plugins(writes).await?;
            store.flush().await?;
            println!(
                "synced: added {:?}, updated {:?}, unchanged {}, disabled as removed {:?}",
                report.added,
                report.updated,
                report.unchanged.len(),
                report.removed
            );
            Ok(())
        }
        Command::Plan {
            plugins,
            finding_types,
            targets,
            file_id,
        } => cmd_plan(
            &plugins,
            finding_types.as_deref(),
            &targets,
            FileId(file_id),
        ),
    }
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn parse_org(s: &str) -> Result<Organization, Error> {
    let (code, name) = s.split_once(':').unwrap_or((s, s));
    Ok(Organization {
        code: OrgCode::new(code)?,
        name: name.to_string(),
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

/// The JWT secret: `KAT_JWT_SECRET`, else the file `KAT_JWT_SECRET_FILE`, else `<data>/jwt.secret`
/// (created with 32 random bytes, mode 0600, on first use).
fn load_or_create_secret(data: Option<&Path>) -> Result<Vec<u8>, Error> {
    if let Ok(s) = std::env::var("KAT_JWT_SECRET")
        && !s.is_empty()
    {
        return Ok(s.into_bytes());
    }
    if let Ok(p) = std::env::var("KAT_JWT_SECRET_FILE")
        && !p.is_empty()
    {
        return std::fs::read(&p)
            .map_err(|e| Error::invalid("KAT_JWT_SECRET_FILE", format!("cannot read {p}: {e}")));
    }
    let data = data.ok_or_else(|| {
        Error::invalid(
            "--data",
            "give --data (for its jwt.secret) or set KAT_JWT_SECRET",
        )
    })?;
    let path = data.join("jwt.secret");
    match std::fs::read(&path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data)?;
            let secret = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
            .into_bytes();
            write_private(&path, &secret)?;
            Ok(secret)
        }
        Err(e) => Err(Error::invalid(
            "--data",
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// The report of `katd report`.
async fn report(c: &Client) -> Result<(), Error> {
    let mut plugin_of: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut found_by = async |task: &serde_json::Value| -> String {
        let Some(id) = task.as_str() else {
            return "declared".into();
        };
        if !plugin_of.contains_key(id) {
            let p = match c.get(&format!("/tasks/{id}/"), &[]).await {
                Ok(t) => t["plugin_id"].as_str().unwrap_or("?").to_string(),
                Err(_) => "?".into(),
            };
            plugin_of.insert(id.to_string(), p);
        }
        format!("{} (task {})", plugin_of[id], &id[..8.min(id.len())])
    };
    let all = [("limit".to_string(), "1000".to_string())];
    let findings = c.get("/objects/finding/", &all).await?;
    let types = c.get("/objects/findingtype/", &all).await?;
    let risk_of = |code: &str| -> String {
        types["results"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["code"] == code))
            .and_then(|t| t["risk"].as_str())
            .unwrap_or("?")
            .to_string()
    };
    let list = findings["results"].as_array().cloned().unwrap_or_default();
    println!("Findings ({}):", list.len());
    println!(
        "  {:<14}  {:<32}  {:<28}  found by",
        "risk", "finding type", "about"
    );
    let mut rows = Vec::new();
    for f in &list {
        let code = f["finding_type"].as_str().unwrap_or("?");
        let about = f["hostname"]
            .as_str()
            .or(f["address"].as_str())
            .unwrap_or("?");
        rows.push((
            risk_of(code),
            code.to_string(),
            about.to_string(),
            found_by(&f["last_seen_by"]).await,
        ));
    }
    let rank = |r: &str| {
        ["critical", "high", "medium", "low", "recommendation"]
            .iter()
            .position(|x| *x == r)
            .unwrap_or(9)
    };
    rows.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then(a.1.cmp(&b.1)));
    for (risk, code, about, by) in rows {
        println!("  {risk:<14}  {code:<32}  {about:<28}  {by}");
    }
    println!();
    println!("Objects written by plugins:");
    for ty in [
        "hostname",
        "ipaddress",
        "ipport",
        "software",
        "dnsarecord",
        "dnsaaaarecord",
        "dnscnamerecord",
        "dnsmxrecord",
        "dnsnsrecord",
        "dnstxtrecord",
    ] {
        let page = c.get(&format!("/objects/{ty}/"), &all).await?;
        for o in page["results"].as_array().cloned().unwrap_or_default() {
            if o["created_by"].is_null() && o["last_seen_by"].is_null() {
                continue;
            }
            let mut extra = String::new();
            if ty == "ipport" {
                extra = format!(
                    " service={} software={}",
                    o["service"].as_str().unwrap_or("-"),
                    o["software"]
                );
            }
            println!(
                "  {ty:<14}  {:<44}  {}{extra}",
                o["id"].as_str().unwrap_or("?"),
                found_by(&o["last_seen_by"]).await
            );
        }
    }
    Ok(())
}

/// Follow tasks until they end, with a progress bar on a terminal; print each task's end.
async fn follow(c: &Client, ids: &[String], wait: Duration) -> Result<(), Error> {
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(ids.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} tasks ended {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        Some(b)
    } else {
        None
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut pending: Vec<String> = ids.to_vec();
    let mut failed = 0;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in &pending {
            let t = c.get(&format!("/tasks/{id}/"), &[]).await?;
            let state = t["state"]
                .as_str()
                .or(t["status"].as_str())
                .unwrap_or("?")
                .to_string();
            if ["queued", "running"].contains(&state.as_str()) {
                still.push(id.clone());
                if let Some(b) = &bar {
                    b.set_message(format!("({id}: {state})"));
                }
                continue;
            }
            if state != "completed" {
                failed += 1;
            }
            let line = format!(
                "task {id}: {state}{}{}",
                t["exit_code"]
                    .as_i64()
                    .map(|c| format!(", exit {c}"))
                    .unwrap_or_default(),
                t["reason"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            match &bar {
                Some(b) => {
                    b.inc(1);
                    b.println(line);
                }
                None => println!("{line}"),
            }
        }
        pending = still;
        if !pending.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                if let Some(b) = &bar {
                    b.abandon();
                }
                return Err(Error::Timeout(format!(
                    "{} task(s) still running: {}",
                    pending.len(),
                    pending.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if failed > 0 {
        return Err(Error::backend(
            "katd",
            format!("{failed} of {} task(s) did not complete", ids.len()),
            false,
        ));
    }
    Ok(())
}

fn cmd_plan(
    files: &[PathBuf],
    finding_types: Option<&Path>,
    targets: &[String],
    file_id: FileId,
) -> Result<(), Error> {
    let defs = PluginDef::load_files(files)?;
    println!(
        "loaded {} plugins from {}",
        defs.len(),
        files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(ft) = finding_types {
        let types = FindingTypes::load(ft)?;
        println!("loaded {} finding types from {}", types.len(), ft.display());
    }
    let mut hostnames = Vec::new();
    let mut addresses = Vec::new();
    for t in targets {
        if let Ok(ip) = canonical_ip(t) {
            addresses.push(Target::value(ip.to_string()));
        } else {
            hostnames.push(Target::value(
                canonical_hostname(t).map_err(|e| e.within("--target"))?,
            ));
        }
    }
    for def in &defs {
        println!();
        println!(
            "plugin {} ({}), image {}, scan level {}",
            def.plugin_id, def.name, def.oci_image, def.scan_level
        );
        let types = def.consumed_types();
        let mut inputs: Vec<Target> = Vec::new();
        if types.contains(&ObjectType::Hostname) {
            inputs.extend(hostnames.iter().cloned());
        }
        if types.contains(&ObjectType::IpAddress) {
            inputs.extend(addresses.iter().cloned());
        }
        let input = if !def.consumed_files().is_empty() {
            PlanInput::Files(vec![file_id])
        } else if inputs.is_empty() {
            PlanInput::None
        } else {
            PlanInput::Objects(inputs)
        };
        let batch = def.effective_batch_size(DEFAULT_BATCH_SIZE);
        match plan(def, &input) {
            Err(e) => println!("  refused: {e}"),
            Ok(p) => {
                println!(
                    "  {}; batch size {}",
                    p.mode,
                    batch.map_or("none".to_string(), |b| b.to_string())
                );
                for (i, cmd) in p.commands.iter().enumerate() {
                    println!(
                        "  argv[{i}]: {}",
                        serde_json::to_string(cmd).unwrap_or_default()
                    );
                }
                match &p.stdin {
                    Stdin::None => {}
                    Stdin::Targets(s) => println!(
                        "  stdin (IN_FILE): {}",
                        serde_json::to_string(s).unwrap_or_default()
                    ),
                    Stdin::File(f) => println!("  stdin (IN_FILE): the content of file {f}"),
                }
                println!("  token permissions: {}", p.permissions(def, &[]).to_json());
            }
        }
    }
    Ok(())
}
