//! `katd objects`: list objects of a type, one JSON object per line.

use kat::core::Error;
use kat::core::object::ObjectType;

use crate::ObjectsArgs;
use crate::client::Client;

/// Print the count and each object.
pub(crate) async fn run(args: ObjectsArgs) -> Result<(), Error> {
    let c = Client::new(&args.api.api, &args.api.token)?;
    let ty: ObjectType = args.object_type.parse()?;
    let mut q = vec![("limit".to_string(), args.limit.to_string())];
    for f in &args.filters {
        q.push(filter(f)?);
    }
    let page = c.get(&format!("/objects/{ty}/"), &q).await?;
    println!("{} {ty} object(s)", page["count"]);
    for o in page["results"].as_array().cloned().unwrap_or_default() {
        println!("{}", serde_json::to_string(&o).unwrap_or_default());
    }
    Ok(())
}

/// `field=value` as a query parameter.
fn filter(f: &str) -> Result<(String, String), Error> {
    let (k, v) = f
        .split_once('=')
        .ok_or_else(|| Error::invalid("--filter", format!("expected field=value, got {f:?}")))?;
    Ok((k.into(), v.into()))
}
