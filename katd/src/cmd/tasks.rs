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
        "{:<36}  {:<16}  {:<10}  {:>4}  {:>7}  reason",
        "task", "plugin", "state", "exit", "refused"
    );
    for t in page["results"].as_array().cloned().unwrap_or_default() {
        println!("{}", line(&t));
    }
    Ok(())
}

/// A task's line: id, plugin, state, exit code, refused API calls (blank when none), reason (which
/// names the first refusal).
fn line(t: &Value) -> String {
    format!(
        "{:<36}  {:<16}  {:<10}  {:>4}  {:>7}  {}",
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
        t["refused_calls"]
            .as_u64()
            .filter(|n| *n > 0)
            .map(|n| n.to_string())
            .unwrap_or_default(),
        t["reason"].as_str().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_line_shows_refused_calls_only_when_there_are_some() {
        let t = json!({"id": "t1", "plugin_id": "parse-nmap", "state": "completed", "exit_code": 0,
                       "refused_calls": 3, "reason": "mode 5 finished; 3 API calls refused (first: x)"});
        let l = line(&t);
        assert!(l.contains("completed"), "{l}");
        assert!(
            l.contains("        3  mode 5 finished; 3 API calls refused"),
            "{l}"
        );
        let t = json!({"id": "t2", "plugin_id": "dns", "state": "completed", "exit_code": 0,
                       "refused_calls": 0, "reason": "mode 1 finished"});
        assert!(
            line(&t).ends_with("0           mode 1 finished"),
            "{}",
            line(&t)
        );
    }
}
