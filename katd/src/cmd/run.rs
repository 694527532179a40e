//! `katd run`: queue a plugin over targets through the API and follow its tasks until they end.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kat::core::Error;
use serde_json::{Value, json};

use crate::RunArgs;
use crate::client::Client;

/// How often the tasks are polled.
const POLL: Duration = Duration::from_millis(300);

/// Queue the plugin, then follow the tasks it made; fails if any did not complete.
pub(crate) async fn run(args: RunArgs) -> Result<(), Error> {
    let c = Client::new(&args.api.api, &args.api.token)?;
    let ids = queue(&c, &args.plugin, &args.targets).await?;
    follow(&c, &ids, Duration::from_secs(args.wait)).await
}

/// Queue the plugin over the targets; the ids of the tasks created (one, or one per batch).
async fn queue(c: &Client, plugin: &str, targets: &[String]) -> Result<Vec<String>, Error> {
    let body = json!({"type": "plugin", "data": {"plugin_id": plugin, "input_data": targets}});
    let created = c.post("/tasks/", &body).await?;
    Ok(match &created {
        Value::Array(items) => items
            .iter()
            .filter_map(|t| t["id"].as_str().map(String::from))
            .collect(),
        one => one["id"].as_str().map(String::from).into_iter().collect(),
    })
}

/// Follow tasks until they end, with a progress bar on a terminal; print each task's end.
async fn follow(c: &Client, ids: &[String], wait: Duration) -> Result<(), Error> {
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| progress_bar(ids.len()));
    let deadline = tokio::time::Instant::now() + wait;
    let mut pending: Vec<String> = ids.to_vec();
    let mut failed = 0;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in &pending {
            let t = c.get(&format!("/tasks/{id}/"), &[]).await?;
            let state = state_of(&t);
            if ["queued", "running"].contains(&state.as_str()) {
                still.push(id.clone());
                if let Some(b) = &bar {
                    b.set_message(format!("({id}: {state})"));
                }
                continue;
            }
            if state != "completed" {
                failed += 1;
            }
            let line = end_line(id, &state, &t);
            match &bar {
                Some(b) => {
                    b.inc(1);
                    b.println(line);
                }
                None => println!("{line}"),
            }
        }
        pending = still;
        if !pending.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                if let Some(b) = &bar {
                    b.abandon();
                }
                return Err(still_running(&pending));
            }
            tokio::time::sleep(POLL).await;
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if failed > 0 {
        return Err(Error::backend(
            "katd",
            format!("{failed} of {} task(s) did not complete", ids.len()),
            false,
        ));
    }
    Ok(())
}

/// A bar of `len` tasks on stderr.
fn progress_bar(len: usize) -> ProgressBar {
    let b = ProgressBar::new(len as u64);
    b.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} tasks ended {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    b.enable_steady_tick(Duration::from_millis(120));
    b
}

/// A task's state as the API reports it.
fn state_of(t: &Value) -> String {
    t["state"]
        .as_str()
        .or(t["status"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// `task <id>: <state>[, exit <code>][ (<reason>)]`.
fn end_line(id: &str, state: &str, t: &Value) -> String {
    format!(
        "task {id}: {state}{}{}",
        t["exit_code"]
            .as_i64()
            .map(|c| format!(", exit {c}"))
            .unwrap_or_default(),
        t["reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    )
}

/// The error for tasks still running when the wait is over (they keep running).
fn still_running(pending: &[String]) -> Error {
    Error::Timeout(format!(
        "{} task(s) still running: {}",
        pending.len(),
        pending.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_line_has_the_exit_code_and_reason_when_there_are_some() {
        let t = json!({"state": "failed", "exit_code": 3, "reason": "boom"});
        assert_eq!(
            end_line("t1", &state_of(&t), &t),
            "task t1: failed, exit 3 (boom)"
        );
        let t = json!({"status": "completed"});
        assert_eq!(end_line("t2", &state_of(&t), &t), "task t2: completed");
    }
}
