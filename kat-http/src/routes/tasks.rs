//! `/tasks/`: submit (through the engine's [`kat_core::control::TaskControl`]), list, get, cancel.

use http::Response;
use serde_json::{Map, Value, json};

use kat_core::control::{TaskControl, TaskRequest};
use kat_core::store::TaskQuery;
use kat_core::task::{Task, TaskId, TaskState};

use super::{Ctx, created, ok, page_of};
use crate::auth::ListScope;
use crate::body::ApiBody;
use crate::error::{ApiError, ApiResult};

/// A task's JSON: kat-rs's fields plus the original's `type`, `data` and `status`.
pub(crate) fn task_json(t: &Task) -> Value {
    let input_data: Vec<String> = t
        .input
        .objects
        .iter()
        .map(|o| o.key.as_str().to_string())
        .chain(t.input.files.iter().map(|f| f.to_string()))
        .collect();
    json!({
        "id": t.id.to_string(),
        "type": "plugin",
        "organization": t.org.as_str(),
        "plugin_id": t.plugin_id,
        "data": {"plugin_id": t.plugin_id, "input_data": input_data},
        "input": {
            "objects": t.input.objects.iter().map(|o| json!({"object_type": o.object_type.as_str(), "key": o.key.as_str()})).collect::<Vec<_>>(),
            "files": t.input.files.iter().map(|f| f.0).collect::<Vec<_>>(),
        },
        "status": t.state.as_str(),
        "state": t.state.as_str(),
        "created_at": t.created_at.to_string(),
        "started_at": t.started_at.map(|x| x.to_string()),
        "ended_at": t.ended_at.map(|x| x.to_string()),
        "schedule": t.schedule.map(|s| s.to_string()),
        "source_file": t.source_file.map(|f| f.0),
        "exit_code": t.exit_code,
        "reason": t.reason,
        "stderr_tail": t.stderr_tail,
        "attempts": t.attempts,
        "refused_calls": t.refused_calls,
        "first_refusal": t.first_refusal,
        "worker": t.lease.as_ref().map(|l| l.worker.as_str()),
        "lease_until": t.lease.as_ref().map(|l| l.until.to_string()),
    })
}

fn parse_id(raw: &str) -> ApiResult<TaskId> {
    raw.parse::<TaskId>()
        .map_err(|_| ApiError::invalid("id", format!("not a task id (a UUID): {raw:?}")))
}

fn control<'a>(ctx: &'a Ctx<'_>) -> ApiResult<&'a dyn TaskControl> {
    ctx.inner.control.as_deref().ok_or_else(|| {
        ApiError::unavailable(
            "no task engine is running behind this API; tasks cannot be queued or cancelled",
        )
    })
}

/// One `{"type": "plugin", "data": {"plugin_id", "input_data"}}`, at `at`.
fn parse_request(ctx: &Ctx<'_>, v: Value, at: &str) -> ApiResult<TaskRequest> {
    let prefix = |f: &str| {
        if at.is_empty() {
            f.to_string()
        } else {
            format!("{at}.{f}")
        }
    };
    let m = match v {
        Value::Object(m) => m,
        _ => return Err(ApiError::invalid(at, "expected a task object")),
    };
    let known = ["type", "data"];
    if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            prefix(k),
            format!("unknown field {k:?}; known fields: type, data"),
        ));
    }
    match m.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "plugin" => {}
        Some(_) => {
            return Err(ApiError::invalid(
                prefix("type"),
                "only \"plugin\" tasks can be created here",
            ));
        }
    }
    let data: &Map<String, Value> = match m.get("data") {
        Some(Value::Object(d)) => d,
        _ => {
            return Err(ApiError::invalid(
                prefix("data"),
                "data must be an object with plugin_id and input_data",
            ));
        }
    };
    let known = ["plugin_id", "input_data"];
    if let Some(k) = data.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            prefix(&format!("data.{k}")),
            format!("unknown field {k:?}; known fields: plugin_id, input_data"),
        ));
    }
    let plugin_id = match data.get("plugin_id") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => s.clone(),
        _ => {
            return Err(ApiError::invalid(
                prefix("data.plugin_id"),
                "plugin_id must be a plugin's id",
            ));
        }
    };
    let input = match data.get("input_data") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(ApiError::invalid(
                    prefix(&format!("data.input_data[{i}]")),
                    "input_data items must be strings",
                )),
            })
            .collect::<ApiResult<_>>()?,
        Some(_) => {
            return Err(ApiError::invalid(
                prefix("data.input_data"),
                "input_data must be a string, a list of strings or null",
            ));
        }
    };
    Ok(TaskRequest {
        org: ctx.caller.org().clone(),
        plugin_id,
        input,
        submitter: ctx.caller.submitter(),
    })
}

/// `POST /tasks/`: one request or a list. One request answers with its task (a list when the engine
/// split it into several batches); a list answers with every created task, and is all or nothing
/// ([`TaskControl::submit_all`]): one refused request queues none of them.
pub(crate) async fn create(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    ctx.require_create()?;
    let v = ctx.read_json().await?;
    let (requests, single) = match v {
        Value::Array(items) => {
            if items.len() > 1000 {
                return Err(ApiError::invalid("", "at most 1000 task requests at once"));
            }
            let reqs = items
                .into_iter()
                .enumerate()
                .map(|(i, v)| parse_request(ctx, v, &format!("[{i}]")))
                .collect::<ApiResult<Vec<_>>>()?;
            (reqs, false)
        }
        other => (vec![parse_request(ctx, other, "")?], true),
    };
    let control = control(ctx)?;
    // A list is all or nothing: every request is validated before any task is queued.
    let out = if single {
        let mut requests = requests;
        match requests.pop() {
            Some(r) => control.submit(r).await?,
            None => Vec::new(),
        }
    } else {
        control.submit_all(requests).await?
    };
    if single && out.len() == 1 {
        return Ok(created(&task_json(&out[0])));
    }
    Ok(created(&Value::Array(out.iter().map(task_json).collect())))
}

/// `GET /tasks/` (filters `state`, repeated, and `plugin_id`).
pub(crate) async fn list(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&["state", "plugin_id", "limit", "offset"])?;
    let p = ctx.list_params()?;
    let scope = ctx.list_scope(&p)?;
    let states = ctx.query.all("state");
    let states = if states.is_empty() {
        None
    } else {
        Some(
            states
                .iter()
                .map(|s| s.parse::<TaskState>().map_err(ApiError::from))
                .collect::<ApiResult<Vec<_>>>()?,
        )
    };
    let q = TaskQuery {
        org: Some(ctx.caller.org().clone()),
        states,
        plugin_id: ctx.query.one("plugin_id")?.map(str::to_string),
        schedule: None,
        limit: p.limit,
        offset: p.offset,
    };
    let (count, items) = match scope {
        ListScope::All => {
            let page = ctx.inner.tasks.list_tasks(&q).await?;
            (page.count, page.items)
        }
        ListScope::Only(pks) => {
            let mut tasks = Vec::new();
            for pk in &pks {
                if let Ok(id) = pk.parse::<TaskId>()
                    && let Some(t) = ctx.inner.tasks.get_task(id).await?
                    && q.matches(&t)
                {
                    tasks.push(t);
                }
            }
            tasks.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
            page_of(tasks, &p)
        }
    };
    Ok(ctx.page(&p, count, items.iter().map(task_json).collect()))
}

/// `GET /replicas/`: the katd processes sharing the store, from their heartbeats (id, roles,
/// start, last heartbeat and its age in seconds, running tasks, version), by id. Deployment-wide:
/// no organization's data is in it.
pub(crate) async fn replicas(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&["limit", "offset"])?;
    let p = ctx.list_params()?;
    let now = kat_core::clock::Timestamp::now();
    let all = ctx.inner.tasks.list_replicas().await?;
    let items: Vec<Value> = all
        .iter()
        .map(|r| {
            let age_ms = (now.as_millis() - r.last_seen.as_millis()).max(0);
            json!({
                "id": r.id,
                "roles": r.roles.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
                "started_at": r.started_at,
                "last_seen": r.last_seen,
                "last_seen_seconds_ago": age_ms as f64 / 1000.0,
                "running": r.running,
                "version": r.version,
            })
        })
        .collect();
    let (count, items) = page_of(items, &p);
    Ok(ctx.page(&p, count, items))
}

async fn load(ctx: &Ctx<'_>, id: TaskId) -> ApiResult<Task> {
    match ctx.inner.tasks.get_task(id).await? {
        Some(t) if t.org == *ctx.caller.org() => Ok(t),
        _ => Err(ApiError::not_found(format!("No task {id}."))),
    }
}

/// `GET /tasks/<id>/`.
pub(crate) async fn retrieve(ctx: &mut Ctx<'_>, raw: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let id = parse_id(raw)?;
    ctx.require_pk(&id.to_string())?;
    let t = load(ctx, id).await?;
    Ok(ok(&task_json(&t)))
}

/// `POST /tasks/<id>/cancel/` (permission `tasks.change_task`).
pub(crate) async fn cancel(ctx: &mut Ctx<'_>, raw: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let id = parse_id(raw)?;
    ctx.require_pk(&id.to_string())?;
    load(ctx, id).await?;
    let control = control(ctx)?;
    let t = control.cancel(ctx.caller.org(), id).await?;
    Ok(ok(&task_json(&t)))
}
