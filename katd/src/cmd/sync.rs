//! `katd sync`: sync plugin files into the store of a data directory that no katd is serving.

use kat::core::Error;
use kat::deploy::{StoreChoice, sync_plugins};

use crate::SyncArgs;

/// Sync the way `serve` does at start, and print what changed.
pub(crate) async fn run(args: SyncArgs) -> Result<(), Error> {
    let store = StoreChoice::parse("sled", &args.data)?;
    let report = sync_plugins(&store, &args.plugins, !args.new_plugins_disabled).await?;
    println!(
        "synced: added {:?}, updated {:?}, unchanged {}, disabled as removed {:?}",
        report.added,
        report.updated,
        report.unchanged.len(),
        report.removed
    );
    Ok(())
}
