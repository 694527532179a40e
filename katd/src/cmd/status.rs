//! `katd status`: the replicas sharing the store (roles, last heartbeat, running tasks) and the
//! organization's running tasks with their workers and how long their leases still hold.

use kat::core::Error;
use kat::core::clock::Timestamp;
use serde_json::Value;

use crate::ApiArgs;
use crate::client::Client;

/// Print the replicas, then the running tasks.
pub(crate) async fn run(args: ApiArgs) -> Result<(), Error> {
    let c = Client::new(&args.api, &args.token)?;
    let replicas = c
        .get("/replicas/", &[("limit".to_string(), "1000".to_string())])
        .await?;
    println!(
        "{:<24}  {:<22}  {:>9}  {:>7}  version",
        "replica", "roles", "last seen", "running"
    );
    for r in replicas["results"].as_array().cloned().unwrap_or_default() {
        println!("{}", replica_line(&r));
    }
    let running = c
        .get(
            "/tasks/",
            &[
                ("state".to_string(), "running".to_string()),
                ("limit".to_string(), "1000".to_string()),
            ],
        )
        .await?;
    let tasks = running["results"].as_array().cloned().unwrap_or_default();
    println!();
    println!(
        "{:<36}  {:<16}  {:<24}  lease",
        "running task", "plugin", "worker"
    );
    let now = Timestamp::now();
    for t in &tasks {
        println!("{}", task_line(t, now));
    }
    if tasks.is_empty() {
        println!("(none)");
    }
    Ok(())
}

/// A replica's line: id, roles, seconds since its last heartbeat, running tasks, version.
fn replica_line(r: &Value) -> String {
    let roles: Vec<&str> = r["roles"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    format!(
        "{:<24}  {:<22}  {:>8.1}s  {:>7}  {}",
        r["id"].as_str().unwrap_or("?"),
        roles.join(","),
        r["last_seen_seconds_ago"].as_f64().unwrap_or(f64::NAN),
        r["running"].as_u64().unwrap_or(0),
        r["version"].as_str().unwrap_or("")
    )
}

/// A running task's line: id, plugin, worker, and when its lease ends (`ends in 12.0s`, or
/// `ended 3.0s ago`: its worker is gone and a recovery pass will take it).
fn task_line(t: &Value, now: Timestamp) -> String {
    let lease = t["lease_until"]
        .as_str()
        .and_then(Timestamp::parse_rfc3339)
        .map(|until| {
            let ms = until.as_millis() - now.as_millis();
            if ms >= 0 {
                format!("ends in {:.1}s", ms as f64 / 1000.0)
            } else {
                format!("ended {:.1}s ago", -ms as f64 / 1000.0)
            }
        })
        .unwrap_or_else(|| "none".to_string());
    format!(
        "{:<36}  {:<16}  {:<24}  {}",
        t["id"].as_str().unwrap_or("?"),
        t["plugin_id"].as_str().unwrap_or("?"),
        t["worker"].as_str().unwrap_or("-"),
        lease
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_show_roles_heartbeats_and_lease_ends() {
        let r = json!({"id": "w1", "roles": ["worker"], "last_seen_seconds_ago": 1.25, "running": 3, "version": "0.1.0"});
        let l = replica_line(&r);
        assert!(l.starts_with("w1 "), "{l}");
        assert!(
            l.contains("worker") && l.contains("1.2s") && l.contains(" 3  0.1.0"),
            "{l}"
        );
        let now = Timestamp::parse_rfc3339("2026-12-03T10:00:00Z").unwrap();
        let t = json!({"id": "t1", "plugin_id": "dns", "worker": "w2", "lease_until": "2026-12-03T10:00:12.000Z"});
        assert!(
            task_line(&t, now).ends_with("w2                        ends in 12.0s"),
            "{}",
            task_line(&t, now)
        );
        let t = json!({"id": "t1", "plugin_id": "dns", "worker": "w2", "lease_until": "2026-12-03T09:59:57Z"});
        assert!(task_line(&t, now).ends_with("ended 3.0s ago"));
    }
}
