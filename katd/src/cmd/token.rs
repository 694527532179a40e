//! `katd token`: mint a token for a person or program, to use the API with curl.

use std::sync::Arc;
use std::time::Duration;

use kat::core::Error;
use kat::core::memory::MemoryTaskStore;
use kat::core::org::OrgCode;
use kat::core::permission::Permissions;
use kat::http::JwtAuthority;

use crate::TokenArgs;
use crate::secret::load_or_create_secret;

/// Print a token signed with the deployment's secret.
pub(crate) fn run(args: TokenArgs) -> Result<(), Error> {
    let secret = load_or_create_secret(args.data.as_deref())?;
    // Minting needs no revocation list: a fresh one in memory will do.
    let auth = JwtAuthority::hs256(&secret, Arc::new(MemoryTaskStore::default()))?;
    let perms = permissions(args.admin, args.permissions.as_deref())?;
    let token = kat::http::mint_operator_token(
        &auth,
        &args.user,
        OrgCode::new(&args.org)?,
        perms,
        Duration::from_secs(args.ttl),
    )?;
    println!("{token}");
    Ok(())
}

/// Every permission (`--admin`), or those of `--permissions` (JSON); one of the two is required.
fn permissions(admin: bool, json: Option<&str>) -> Result<Permissions, Error> {
    match (admin, json) {
        (true, _) => Ok(kat::http::all_permissions()),
        (false, Some(json)) => {
            let v: serde_json::Value = serde_json::from_str(json)
                .map_err(|e| Error::invalid("--permissions", format!("not JSON: {e}")))?;
            Permissions::from_json(&v, "--permissions")
        }
        (false, None) => Err(Error::invalid(
            "--permissions",
            "give --admin or --permissions '{...}'",
        )),
    }
}
