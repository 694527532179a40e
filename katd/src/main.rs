//! `katd`: the kat-rs daemon and operator tool.
//!
//! ```text
//! katd serve   --data /var/lib/kat --plugins plugins/plugins.json --org acme
//! katd token   --data /var/lib/kat --org acme --admin            # prints a token for curl (acme must exist)
//! katd declare --type hostname example.com --scan-level 2        # KAT_API and KAT_TOKEN from the environment
//! katd run     dns example.com                                   # queue a task and follow it
//! katd tasks | katd status | katd objects hostname | katd files | katd report
//! katd levels  --recompute                                       # recompute inherited scan levels
//! katd sync    --data /var/lib/kat --plugins plugins/plugins.json   (while katd is not running)
//! katd plan    --plugins plugins/plugins.json --target example.com  (no engine needed)
//! katd rules   list | enable NAME | disable NAME | run [--data /var/lib/kat --rules FILE]
//! ```
//!
//! `serve` runs a deployment of `kat::deploy` on the store and runtime chosen by `--store` / `KAT_STORE`
//! (`sled` in the data directory, `sled:<path>`, `memory` or a `postgres://` URL that several replicas
//! share, docs/scale-out.md; default: sled in `--data`) and `--runtime` /
//! `KAT_RUNTIME` (`docker` or `podman`; default: docker). It reads the seed's variables:
//! `ENTRYPOINT_VOLUME`, `OPENKAT_HOST` (the API as containers reach it), `DOCKER_NETWORK`,
//! `PLUGIN_TIMEOUT` (minutes, more than 0 and at most 7 days), and `KAT_JWT_SECRET` / `KAT_JWT_SECRET_FILE` (else a secret is generated
//! once into `<data>/jwt.secret`), and `KAT_DEPLOYMENT` (its containers' deployment label; default: named
//! after the data directory, so katds sharing an engine reap only their own; on PostgreSQL named after the
//! database, so that replicas of one database reap what a dead one left). Replicas sharing one database
//! set `KAT_WORKER_ID` / `--worker-id` (distinct, stable; default `local`) and `KAT_ROLES` / `--role`
//! (`api`, `worker`, `scheduler`; default all), may set `KAT_API_URL` / `--api-url` (the API their
//! containers call; default their own listener), and may tune `KAT_LEASE_SECONDS` and `KAT_POLL_MS`
//! (docs/decisions.md D36). `katd status` lists the replicas and the running tasks' leases.
//!
//! This file holds the command line (clap) and the dispatch; each subcommand is a module of [`cmd`], the
//! API client of the operator subcommands is [`client`], and the JWT secret and private files are
//! [`secret`]. How a deployment is assembled (stores, runtime, engine, API) is `kat::deploy`'s, not
//! katd's.

#![forbid(unsafe_code)]

mod client;
mod cmd;
mod secret;

// sled allocates on every write; glibc's malloc halves its throughput here (docs/store-sled.md).
// `main` also turns off transparent huge pages, which mimalloc would otherwise use.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kat::core::Error;

/// The kat-rs daemon and operator tool.
#[derive(Debug, Parser)]
#[command(name = "katd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the API is and the token to call it with (the operator subcommands).
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
    /// Serve the API and run plugins: a store, a container runtime and the HTTP API (default: sled +
    /// Docker), until Ctrl-C or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Mint a token for a person or program, to use the API with curl; the organization must exist
    /// (asked of the API at --api / KAT_API unless --no-check).
    Token(TokenArgs),
    /// Declare objects (hostnames or IP addresses), optionally with a scan level.
    Declare(DeclareArgs),
    /// Queue a plugin now over targets (natural keys, names, addresses or file ids) and follow it.
    Run(RunArgs),
    /// List tasks.
    Tasks(TasksArgs),
    /// The replicas sharing the store (roles, last heartbeat, running tasks) and the running tasks
    /// with their workers and lease ends.
    Status(ApiArgs),
    /// List objects of a type.
    Objects(ObjectsArgs),
    /// Print what was found: findings with their risk, and the objects plugins wrote, each with the
    /// plugin and task that found it.
    Report(ReportArgs),
    /// List files.
    Files(FilesArgs),
    /// Scan levels: `--recompute` recomputes every inherited level of the token's organization from
    /// the declared ones and the DNS relations (needs objects.can_set_scan_level) and prints how many
    /// changed.
    Levels(LevelsArgs),
    /// Sync plugin files into a store directly (katd serve must not be running on it).
    Sync(SyncArgs),
    /// Validate plugin files and print how each plugin would run over example targets.
    Plan(PlanArgs),
    /// Business rules: list them, enable or disable one for the token's organization, or run them
    /// (over the token's organization, or with --data over every organization of a store no katd
    /// is serving).
    Rules(RulesArgs),
}

/// `katd rules`.
#[derive(Debug, clap::Args)]
struct RulesArgs {
    #[command(subcommand)]
    action: RulesAction,
}

/// What `katd rules` does.
#[derive(Debug, Subcommand)]
enum RulesAction {
    /// List the rules, each with whether it runs for the token's organization.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Enable a rule for the token's organization.
    Enable {
        #[command(flatten)]
        api: ApiArgs,
        /// The rule's name.
        name: String,
    },
    /// Disable a rule for the token's organization (its findings are retracted).
    Disable {
        #[command(flatten)]
        api: ApiArgs,
        /// The rule's name.
        name: String,
    },
    /// Run every rule once over the token's organization (through the API), or with --data over
    /// every organization of that store directly (katd serve must not be running on it).
    Run(RulesRunArgs),
}

/// `katd rules run`.
#[derive(Debug, clap::Args)]
struct RulesRunArgs {
    /// Run directly on this data directory's store, over every organization.
    #[arg(long, requires = "rules")]
    data: Option<PathBuf>,
    /// The rules file (with --data).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// sled's page cache in MiB, with --data [default: 1024]; through the API the server's own
    /// cache applies (`katd serve --help`).
    #[arg(long, env = "KAT_SLED_CACHE_MIB")]
    sled_cache_mib: Option<String>,
    /// The API's base URL.
    #[arg(long, env = "KAT_API", default_value = "http://127.0.0.1:8000/api/v1")]
    api: String,
    /// An operator token (see `katd token`); not needed with --data.
    #[arg(long, env = "KAT_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `katd serve`.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Data directory (sled database and file contents; jwt.secret).
    #[arg(long, env = "KAT_DATA")]
    data: PathBuf,
    /// The container runtime that runs plugins: docker or podman [default: docker].
    #[arg(long, env = "KAT_RUNTIME")]
    runtime: Option<String>,
    /// The store: sled (in --data), sled:PATH, memory, or a PostgreSQL URL
    /// (postgres://user@host:port/database) that several replicas share [default: sled].
    #[arg(long, env = "KAT_STORE")]
    store: Option<String>,
    /// sled's page cache in MiB, with the sled store [default: 1024]. Reads that miss it decode pages
    /// from disk again: size it to the data a business rules full pass reads (docs/store-sled.md).
    #[arg(long, env = "KAT_SLED_CACHE_MIB")]
    sled_cache_mib: Option<String>,
    /// Address to listen on (the API and /metrics; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// What this replica runs: a comma-separated list of api, worker, scheduler [default: all three].
    /// Every replica serves HTTP on --listen (its containers' API and /metrics); `api` marks the
    /// replicas meant for clients.
    #[arg(long = "role", env = "KAT_ROLES")]
    roles: Option<String>,
    /// This replica's id among those sharing the store; distinct per replica [default: local].
    #[arg(long, env = "KAT_WORKER_ID")]
    worker_id: Option<String>,
    /// The API URL plugin containers call (e.g. a load balancer's, ending in /api/v1) [default: this
    /// replica's own listener].
    #[arg(long, env = "KAT_API_URL")]
    api_url: Option<String>,
    /// Plugin definition files, synced at start.
    #[arg(long = "plugins")]
    plugins: Vec<PathBuf>,
    /// Start plugins that are new to the catalogue disabled.
    #[arg(long)]
    new_plugins_disabled: bool,
    /// The operator's privilege policy (JSON): which plugins may run as another user or with added
    /// capabilities. Without one, a plugin asking for either is refused and never runs.
    #[arg(long, env = "KAT_POLICY")]
    policy: Option<PathBuf>,
    /// A finding_types.json to store in every organization.
    #[arg(long = "finding-types")]
    finding_types: Option<PathBuf>,
    /// The business rules file [default: business_rules.json beside the first --plugins file, when
    /// it exists; otherwise no rules].
    #[arg(long, env = "KAT_RULES")]
    rules: Option<PathBuf>,
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
}

/// `katd token`.
#[derive(Debug, clap::Args)]
struct TokenArgs {
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
    /// The API that checks the organization exists (the deployment the token is for).
    #[arg(long, env = "KAT_API", default_value = "http://127.0.0.1:8000/api/v1")]
    api: String,
    /// Mint without asking the API whether the organization exists (the API refuses the token anyway
    /// while it does not).
    #[arg(long)]
    no_check: bool,
}

/// `katd declare`.
#[derive(Debug, clap::Args)]
struct DeclareArgs {
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
}

/// `katd run`.
#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The plugin.
    plugin: String,
    /// The targets (none for a standalone plugin).
    targets: Vec<String>,
    /// Seconds to follow the tasks before giving up waiting (they keep running).
    #[arg(long, default_value_t = 900)]
    wait: u64,
}

/// `katd tasks`.
#[derive(Debug, clap::Args)]
struct TasksArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Only this state.
    #[arg(long)]
    state: Option<String>,
    /// How many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

/// `katd objects`.
#[derive(Debug, clap::Args)]
struct ObjectsArgs {
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
}

/// `katd report`.
#[derive(Debug, clap::Args)]
struct ReportArgs {
    #[command(flatten)]
    api: ApiArgs,
}

/// `katd levels`.
#[derive(Debug, clap::Args)]
struct LevelsArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Recompute every inherited scan level of the organization (what every write already keeps up
    /// to date; 0 changed means it was).
    #[arg(long, required = true)]
    recompute: bool,
}

/// `katd files`.
#[derive(Debug, clap::Args)]
struct FilesArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// How many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

/// `katd sync`.
#[derive(Debug, clap::Args)]
struct SyncArgs {
    /// Data directory.
    #[arg(long, env = "KAT_DATA")]
    data: PathBuf,
    /// Plugin definition files.
    #[arg(long = "plugins", required = true)]
    plugins: Vec<PathBuf>,
    /// Start new plugins disabled.
    #[arg(long)]
    new_plugins_disabled: bool,
    /// The operator's privilege policy (JSON): which plugins may run as another user or with added
    /// capabilities. Without one, a plugin asking for either is refused and never runs.
    #[arg(long, env = "KAT_POLICY")]
    policy: Option<PathBuf>,
}

/// `katd plan`.
#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// Plugin definition files (JSON lists), loaded together.
    #[arg(long = "plugins", required = true)]
    plugins: Vec<PathBuf>,
    /// A finding_types.json to validate as well.
    #[arg(long = "finding-types")]
    finding_types: Option<PathBuf>,
    /// The operator's privilege policy (JSON): which plugins may run as another user or with added
    /// capabilities. Without one, a plugin asking for either is refused and never runs.
    #[arg(long, env = "KAT_POLICY")]
    policy: Option<PathBuf>,
    /// Example targets: hostnames or IP addresses. Each plugin gets those of the types it takes.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// The example file id given to plugins that take files.
    #[arg(long = "file-id", default_value_t = 1)]
    file_id: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // Huge-page faults inside sled's writes were the API's write p99 (docs/store-sled.md).
    #[cfg(feature = "sled")]
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
    match rt.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("katd: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `KAT_LOG` (default: warnings, and katd's and kat's information).
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,katd=info,kat=info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Run a subcommand.
async fn dispatch(command: Command) -> Result<(), Error> {
    match command {
        Command::Serve(args) => cmd::serve::run(*args).await,
        Command::Token(args) => cmd::token::run(args).await,
        Command::Declare(args) => cmd::declare::run(args).await,
        Command::Run(args) => cmd::run::run(args).await,
        Command::Tasks(args) => cmd::tasks::run(args).await,
        Command::Status(args) => cmd::status::run(args).await,
        Command::Objects(args) => cmd::objects::run(args).await,
        Command::Report(args) => cmd::report::run(args).await,
        Command::Files(args) => cmd::files::run(args).await,
        Command::Levels(args) => cmd::levels::run(args).await,
        Command::Sync(args) => cmd::sync::run(args).await,
        Command::Plan(args) => cmd::plan::run(args),
        Command::Rules(args) => cmd::rules::run(args).await,
    }
}
