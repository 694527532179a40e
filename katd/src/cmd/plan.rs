//! `katd plan`: validate plugin files and print how each plugin would run over example targets (no engine,
//! no store).

use std::path::{Path, PathBuf};

use kat::core::Error;
use kat::core::finding::FindingTypes;
use kat::core::object::{ObjectType, canonical_hostname, canonical_ip};
use kat::core::plan::{ExecutionPlan, PlanInput, Stdin, Target, plan};
use kat::core::plugin::{DEFAULT_BATCH_SIZE, PluginDef};
use kat::core::store::FileId;

use crate::PlanArgs;

/// Load and validate the files, then print each plugin's plan.
pub(crate) fn run(args: PlanArgs) -> Result<(), Error> {
    let defs = load(&args.plugins, args.finding_types.as_deref())?;
    let policy = crate::cmd::load_policy(args.policy.as_deref())?;
    let targets = Targets::parse(&args.targets)?;
    let file_id = FileId(args.file_id);
    for def in &defs {
        println!();
        println!(
            "plugin {} ({}), image {}, scan level {}",
            def.plugin_id, def.name, def.oci_image, def.scan_level
        );
        if let Some(why) = policy.refusal(def) {
            println!("  refused by the policy (will not run): {why}");
            continue;
        }
        match plan(def, &targets.input_for(def, file_id)) {
            Err(e) => println!("  refused: {e}"),
            Ok(p) => print_plan(def, &p),
        }
    }
    Ok(())
}

/// The plugin definitions (and the finding types, only validated), saying what was loaded.
fn load(files: &[PathBuf], finding_types: Option<&Path>) -> Result<Vec<PluginDef>, Error> {
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
    Ok(defs)
}

/// The example targets, by type.
struct Targets {
    hostnames: Vec<Target>,
    addresses: Vec<Target>,
}

impl Targets {
    /// IP addresses, else hostnames (an invalid hostname is an error at `--target`).
    fn parse(targets: &[String]) -> Result<Self, Error> {
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
        Ok(Targets {
            hostnames,
            addresses,
        })
    }

    /// What a plugin would get: the example file if it takes files, else the targets of the types it
    /// takes (none: it runs standalone).
    fn input_for(&self, def: &PluginDef, file_id: FileId) -> PlanInput {
        let types = def.consumed_types();
        let mut inputs: Vec<Target> = Vec::new();
        if types.contains(&ObjectType::Hostname) {
            inputs.extend(self.hostnames.iter().cloned());
        }
        if types.contains(&ObjectType::IpAddress) {
            inputs.extend(self.addresses.iter().cloned());
        }
        if !def.consumed_files().is_empty() {
            PlanInput::Files(vec![file_id])
        } else if inputs.is_empty() {
            PlanInput::None
        } else {
            PlanInput::Objects(inputs)
        }
    }
}

/// The mode, batch size, each command's argv, the stdin and the token's permissions.
fn print_plan(def: &PluginDef, p: &ExecutionPlan) {
    let batch = def.effective_batch_size(DEFAULT_BATCH_SIZE);
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
