//! `katd files`: list files, one line each.

use kat::core::Error;

use crate::FilesArgs;
use crate::client::Client;

/// Print a header and a line per file: id, type, size, task, creation time.
pub(crate) async fn run(args: FilesArgs) -> Result<(), Error> {
    let c = Client::new(&args.api.api, &args.api.token)?;
    let page = c
        .get("/file/", &[("limit".to_string(), args.limit.to_string())])
        .await?;
    println!(
        "{:>6}  {:<20}  {:>10}  {:<36}  created",
        "id", "type", "size", "task"
    );
    for f in page["results"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:>6}  {:<20}  {:>10}  {:<36}  {}",
            f["id"],
            f["type"].as_str().unwrap_or("?"),
            f["size"],
            f["task_id"].as_str().unwrap_or("-"),
            f["created_at"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
