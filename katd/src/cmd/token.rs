//! `katd token`: mint a token for a person or program, to use the API with curl.
//!
//! The organization must exist: before printing the token, `katd token` asks the deployment's API
//! (`--api`, `KAT_API`) with a short-lived probe token for the same organization and no permission.
//! The API refuses a token whose organization does not exist, so an unknown organization is an
//! error here rather than a token that never works. Organizations are created with
//! `POST /api/v1/organizations/` or `katd serve --org`, never by `katd token`. `--no-check` skips the
//! question (for minting while katd is down); such a token is still refused by the API until its
//! organization exists.

use std::sync::Arc;
use std::time::Duration;

use kat::core::Error;
use kat::core::memory::MemoryTaskStore;
use kat::core::org::OrgCode;
use kat::core::permission::Permissions;
use kat::http::JwtAuthority;

use crate::TokenArgs;
use crate::client::encode;
use crate::secret::load_or_create_secret;

/// Print a token signed with the deployment's secret, for an organization that exists.
pub(crate) async fn run(args: TokenArgs) -> Result<(), Error> {
    let secret = load_or_create_secret(args.data.as_deref())?;
    // Minting needs no revocation list: a fresh one in memory will do.
    let auth = JwtAuthority::hs256(&secret, Arc::new(MemoryTaskStore::default()))?;
    let perms = permissions(args.admin, args.permissions.as_deref())?;
    let org = OrgCode::new(&args.org)?;
    if !args.no_check {
        check_organization(&auth, &org, &args.api).await?;
    }
    let token = kat::http::mint_operator_token(
        &auth,
        &args.user,
        org,
        perms,
        Duration::from_secs(args.ttl),
    )?;
    println!("{token}");
    Ok(())
}

/// Ask the API whether `org` exists, with a probe token for it that holds no permission: a 401 says
/// the organization does not exist (or the secret is not the server's), anything the API answers
/// after authentication (403, 200) that it does.
async fn check_organization(auth: &JwtAuthority, org: &OrgCode, api: &str) -> Result<(), Error> {
    let probe = kat::http::mint_operator_token(
        auth,
        "katd-token-check",
        org.clone(),
        Permissions::new(),
        Duration::from_secs(60),
    )?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::backend("katd", e.to_string(), false))?;
    let base = api.trim_end_matches('/');
    let resp = http
        .get(format!("{base}/organizations/{}/", encode(org.as_str())))
        .header("Authorization", format!("Token {probe}"))
        .send()
        .await
        .map_err(|e| Error::Unavailable {
            backend: "api",
            message: format!(
                "cannot check that organization \"{org}\" exists: {e} (is katd serve running at {base}? \
                 set --api or KAT_API, or pass --no-check)"
            ),
            source: Some(Box::new(e)),
        })?;
    if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    if text.contains("organization does not exist") {
        Err(Error::invalid(
            "--org",
            format!(
                "no organization \"{org}\" at {base}; create it first (POST /api/v1/organizations/ \
                 or katd serve --org {org})"
            ),
        ))
    } else {
        Err(Error::invalid(
            "--org",
            format!(
                "the API at {base} refuses tokens signed with this secret; use the deployment's \
                 (--data or KAT_JWT_SECRET)"
            ),
        ))
    }
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
