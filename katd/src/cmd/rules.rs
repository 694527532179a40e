//! `katd rules`: list the business rules, enable or disable one for the token's organization, run
//! them (through the API, or directly on a store no katd is serving).

use kat::core::Error;
use serde_json::{Value, json};

use crate::client::{Client, encode};
use crate::{RulesAction, RulesArgs};

/// Do what the subcommand asks and print the result.
pub(crate) async fn run(args: RulesArgs) -> Result<(), Error> {
    match args.action {
        RulesAction::List { api } => {
            let c = Client::new(&api.api, &api.token)?;
            let page = c
                .get(
                    "/business-rules/",
                    &[("limit".to_string(), "1000".to_string())],
                )
                .await?;
            println!(
                "{:<28}  {:<8}  {:<10}  {:<30}  requires",
                "rule", "enabled", "subject", "finding type"
            );
            for r in page["results"].as_array().cloned().unwrap_or_default() {
                println!("{}", line(&r));
            }
        }
        RulesAction::Enable { api, name } => set(&api, &name, "enable").await?,
        RulesAction::Disable { api, name } => set(&api, &name, "disable").await?,
        RulesAction::Run(r) => match r.data {
            Some(data) => {
                let store = kat::deploy::StoreChoice::parse("sled", &data)?;
                let cache = crate::cmd::sled_cache_mib(r.sled_cache_mib.as_deref(), &store)?;
                let rules = r
                    .rules
                    .ok_or_else(|| Error::invalid("rules", "--data needs --rules FILE"))?;
                let reports = match cache {
                    #[cfg(feature = "sled")]
                    Some(mib) => {
                        let sled = kat::store_sled::SledOptions {
                            cache_capacity_bytes: mib << 20,
                            ..kat::store_sled::SledOptions::default()
                        };
                        kat::deploy::run_rules_with_sled(&store, &rules, sled).await?
                    }
                    _ => kat::deploy::run_rules(&store, &rules).await?,
                };
                for (org, report) in reports {
                    println!(
                        "{org}: {}",
                        summary(&serde_json::to_value(&report).unwrap_or_default())
                    );
                }
            }
            None => {
                let token = r.token.ok_or_else(|| {
                    Error::invalid("token", "a token (--token or KAT_TOKEN), or --data")
                })?;
                let c = Client::new(&r.api, &token)?;
                let v = c.post("/business-rule-runs/", &json!({})).await?;
                println!("{}", summary(&v));
            }
        },
    }
    Ok(())
}

/// Enable or disable a rule and print it and what the pass that followed did.
async fn set(api: &crate::ApiArgs, name: &str, what: &str) -> Result<(), Error> {
    let c = Client::new(&api.api, &api.token)?;
    let v = c
        .post(
            &format!("/business-rules/{}/{what}/", encode(name)),
            &json!({}),
        )
        .await?;
    println!("{}", line(&v));
    println!("{}", summary(&v["pass"]));
    Ok(())
}

/// A rule's line: name, enabled, subject type, finding type, required plugins.
fn line(r: &Value) -> String {
    format!(
        "{:<28}  {:<8}  {:<10}  {:<30}  {}",
        r["id"].as_str().unwrap_or("?"),
        r["enabled"]
            .as_bool()
            .map(|b| if b { "yes" } else { "no" })
            .unwrap_or("?"),
        r["object_type"].as_str().unwrap_or("?"),
        r["finding_type"].as_str().unwrap_or("?"),
        r["requires"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","))
            .unwrap_or_default()
    )
}

/// What a pass did, in words.
fn summary(v: &Value) -> String {
    format!(
        "{} subjects evaluated, {} findings created, {} updated, {} deleted",
        v["subjects"], v["created"], v["updated"], v["deleted"]
    )
}
