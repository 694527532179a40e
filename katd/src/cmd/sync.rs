//! `katd sync`: sync plugin files into the store of a data directory that no katd is serving.

use kat::core::Error;
use kat::deploy::{StoreChoice, sync_plugins};

use crate::SyncArgs;

/// Sync the way `serve` does at start, and print what changed.
pub(crate) async fn run(args: SyncArgs) -> Result<(), Error> {
    let store = StoreChoice::parse("sled", &args.data)?;
    let policy = crate::cmd::load_policy(args.policy.as_deref())?;
    let report = sync_plugins(&store, &args.plugins, !args.new_plugins_disabled, &policy).await?;
    println!(
        "synced: added {:?}, updated {:?}, unchanged {}, disabled as removed {:?}, refused by the policy {:?}",
        report.added,
        report.updated,
        report.unchanged.len(),
        report.removed,
        report.refused.keys().collect::<Vec<_>>()
    );
    for reason in report.refused.values() {
        println!("refused (will not run): {reason}");
    }
    Ok(())
}
