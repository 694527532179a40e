//! `katd levels --recompute`: a full recomputation of the organization's inherited scan levels, through
//! the API (`POST /levels/recompute/`), so it works on a running deployment whatever its store.

use kat::core::Error;

use crate::LevelsArgs;
use crate::client::Client;

/// Ask the API to recompute and print how many objects changed.
pub(crate) async fn run(args: LevelsArgs) -> Result<(), Error> {
    let c = Client::new(&args.api.api, &args.api.token)?;
    if args.recompute {
        let v = c.post("/levels/recompute/", &serde_json::json!({})).await?;
        let changed = v["changed"].as_u64().unwrap_or(0);
        println!("recomputed the inherited scan levels: {changed} object(s) changed");
    }
    Ok(())
}
