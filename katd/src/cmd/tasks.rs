//! `katd tasks`: list tasks, one line each.

use kat::core::Error;
use serde_json::Value;

use crate::TasksArgs;
use crate::client::Client;

/// Print a header and a line per task.
pub(crate) async fn run(args: TasksArgs) -> Result<(), Error> {
    let c = Client::new(&args.api.api, &args.api.token)?;
    let mut q = vec![("limit".to_string(), args.limit.to_string())];
    if let Some(s) = args.state {
        q.push(("state".into(), s));
    }
    let page = c.get("/tasks/", &q).await?;
    println!(
        "{:<36}  {:<16}  {:<10}  {:>4}  reason",
        "task", "plugin", "state", "exit"
    );
    for t in page["results"].as_array().cloned().unwrap_or_default() {
        println!("{}", line(&t));
    }
    Ok(())
}

/// A task's line: id, plugin, state, exit code, reason.
fn line(t: &Value) -> String {
    format!(
        "{:<36}  {:<16}  {:<10}  {:>4}  {}",
        t["id"].as_str().unwrap_or("?"),
        t["plugin_id"]
            .as_str()
            .or(t["data"]["plugin_id"].as_str())
            .unwrap_or("?"),
        t["state"].as_str().or(t["status"].as_str()).unwrap_or("?"),
        t["exit_code"]
            .as_i64()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        t["reason"].as_str().unwrap_or("")
    )
}
