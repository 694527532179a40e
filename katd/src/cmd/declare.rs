//! `katd declare`: declare hostnames or IP addresses through the API, optionally with a scan level.

use kat::core::Error;
use kat::core::object::ObjectType;
use serde_json::{Value, json};

use crate::DeclareArgs;
use crate::client::{Client, encode};

/// Create the objects, set their scan level if one is given, and print each.
pub(crate) async fn run(args: DeclareArgs) -> Result<(), Error> {
    let c = Client::new(&args.api.api, &args.api.token)?;
    let ty: ObjectType = args.object_type.parse()?;
    let field = key_field(ty)?;
    let list: Vec<Value> = args.values.iter().map(|v| json!({ field: v })).collect();
    let out = c
        .post(&format!("/objects/{ty}/"), &Value::Array(list))
        .await?;
    for o in out.as_array().cloned().unwrap_or_default() {
        let id = o["id"].as_str().unwrap_or_default().to_string();
        if let Some(level) = args.scan_level {
            c.patch(
                &format!("/objects/{ty}/{}/", encode(&id)),
                &json!({ "scan_level": level }),
            )
            .await?;
        }
        println!(
            "{ty} {id}{}",
            args.scan_level
                .map(|l| format!(" (scan level {l})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// The field that holds a declared value: `name` of a hostname, `address` of an IP address.
fn key_field(ty: ObjectType) -> Result<&'static str, Error> {
    match ty {
        ObjectType::Hostname => Ok("name"),
        ObjectType::IpAddress => Ok("address"),
        other => Err(Error::invalid(
            "--type",
            format!("declare takes hostname or ipaddress, not {other}"),
        )),
    }
}
