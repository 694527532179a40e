//! `katd`: the kat-rs daemon and operator tool.
//!
//! ```text
//! katd plan   --plugins plugins/plugins.json --target example.com --target 192.0.2.1
//! ```
//!
//! `plan` loads and validates plugin files and prints, for each plugin and the example targets, the
//! execution mode, the exact argv of every command, what goes to stdin and what the task's token may do.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kat::core::finding::FindingTypes;
use kat::core::object::{ObjectType, canonical_hostname, canonical_ip};
use kat::core::plan::{PlanInput, Stdin, Target, plan};
use kat::core::plugin::{DEFAULT_BATCH_SIZE, PluginDef};
use kat::core::store::FileId;

/// The kat-rs daemon and operator tool.
#[derive(Debug, Parser)]
#[command(name = "katd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    let result = match cli.command {
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("katd: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cmd_plan(
    files: &[PathBuf],
    finding_types: Option<&std::path::Path>,
    targets: &[String],
    file_id: FileId,
) -> Result<(), kat::core::Error> {
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
                let perms = p.permissions(def, &[]);
                println!("  token permissions: {}", perms.to_json());
            }
        }
    }
    Ok(())
}
