//! `/organizations/`: a token sees its own organization; a token holding `openkat.add_organization`
//! or `openkat.delete_organization` (never a task token) creates or deletes any organization.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use kat_core::object::ObjectType;
use kat_core::org::{OrgCode, Organization};
use kat_core::store::{FileQuery, ObjectQuery, TaskQuery};
use kat_core::task::TaskState;

use super::{Ctx, created, object_body, ok, only_fields, page_of};
use crate::auth::ListScope;
use crate::body::{self, ApiBody};
use crate::error::{ApiError, ApiResult, ErrorType};

fn org_json(o: &Organization) -> Value {
    json!({"id": o.code.as_str(), "code": o.code.as_str(), "name": o.name, "tags": []})
}

/// The caller's organization as stored (authentication has checked that it exists).
async fn own(ctx: &Ctx<'_>) -> ApiResult<Organization> {
    let code = ctx.caller.org().clone();
    Ok(ctx
        .inner
        .tasks
        .get_organization(&code)
        .await?
        .unwrap_or_else(|| Organization::new(code.clone(), code.as_str())))
}

/// `GET /organizations/`.
pub(crate) async fn list(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&["limit", "offset"])?;
    let p = ctx.list_params()?;
    let scope = ctx.list_scope(&p)?;
    let o = own(ctx).await?;
    let visible = match &scope {
        ListScope::All => true,
        ListScope::Only(pks) => pks.contains(o.code.as_str()),
    };
    let items = if visible { vec![o] } else { Vec::new() };
    let (count, items) = page_of(items, &p);
    Ok(ctx.page(&p, count, items.iter().map(org_json).collect()))
}

/// `GET /organizations/<code>/`.
pub(crate) async fn retrieve(ctx: &mut Ctx<'_>, code: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    ctx.require_pk(code)?;
    if code != ctx.caller.org().as_str() {
        return Err(ApiError::not_found(format!("No organization {code:?}.")));
    }
    Ok(ok(&org_json(&own(ctx).await?)))
}

/// Managing organizations is for people and programs, never for a plugin's task.
fn refuse_task_tokens(ctx: &Ctx<'_>) -> ApiResult<()> {
    if ctx.caller.task().is_some() {
        return Err(ApiError::permission_denied(
            "A task token can never create or delete organizations.",
        ));
    }
    Ok(())
}

/// `POST /organizations/` with `{"code", "name"}` (permission `openkat.add_organization`): 201, or
/// 409 when the code exists.
pub(crate) async fn create(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    refuse_task_tokens(ctx)?;
    ctx.require_create()?;
    let m = object_body(ctx.read_json().await?, "an organization")?;
    only_fields(&m, &["code", "name"])?;
    let code = match m.get("code") {
        Some(Value::String(s)) => OrgCode::new(s).map_err(|e| match e {
            kat_core::Error::Invalid { message, .. } => ApiError::invalid("code", message),
            other => other.into(),
        })?,
        Some(_) => return Err(ApiError::invalid("code", "code is a string")),
        None => return Err(ApiError::invalid("code", "an organization needs a code")),
    };
    let name = match m.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::invalid("name", "name is a string")),
        None => return Err(ApiError::invalid("name", "an organization needs a name")),
    };
    Organization::validate_name(&name)?;
    let _admin = ctx.inner.org_admin.lock().await;
    if ctx.inner.tasks.get_organization(&code).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorType::Client,
            "conflict",
            format!("organization {code:?} exists"),
        )
        .with_attr("code"));
    }
    let org = Organization::new(code, name);
    ctx.inner.tasks.put_organization(org.clone()).await?;
    tracing::info!(org = %org.code, by = %ctx.caller.claims.sub, "organization created");
    Ok(created(&org_json(&org)))
}

/// `DELETE /organizations/<code>/` (permission `openkat.delete_organization`): 204. The record
/// goes first, so every token of the organization is refused from then on; then its schedules and
/// object sets, its queued and running tasks (cancelled: containers killed, task tokens revoked),
/// its objects, files, task records and plugin overrides are deleted.
pub(crate) async fn destroy(ctx: &mut Ctx<'_>, code: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    refuse_task_tokens(ctx)?;
    ctx.require_pk(code)?;
    let Ok(code) = OrgCode::new(code) else {
        return Err(ApiError::not_found(format!("No organization {code:?}.")));
    };
    let _admin = ctx.inner.org_admin.lock().await;
    if !ctx.inner.tasks.delete_organization(&code).await? {
        return Err(ApiError::not_found(format!("No organization {code:?}.")));
    }
    let stats = purge(ctx, &code).await?;
    tracing::info!(
        org = %code,
        by = %ctx.caller.claims.sub,
        objects = stats.objects,
        files = stats.files,
        tasks = stats.tasks,
        "organization deleted with its data"
    );
    Ok(body::no_content())
}

#[derive(Default)]
struct Purged {
    objects: u64,
    files: u64,
    tasks: u64,
}

/// Delete everything an organization owns.
async fn purge(ctx: &Ctx<'_>, code: &OrgCode) -> ApiResult<Purged> {
    let inner = ctx.inner;
    let mut n = Purged::default();
    for s in inner.tasks.list_schedules(Some(code)).await? {
        if s.org.as_ref() == Some(code) {
            inner.tasks.delete_schedule(s.id).await?;
        }
    }
    for s in inner.tasks.list_object_sets(Some(code)).await? {
        inner.tasks.delete_object_set(s.id).await?;
    }
    let live = TaskQuery {
        org: Some(code.clone()),
        states: Some(vec![TaskState::Queued, TaskState::Running]),
        ..TaskQuery::default()
    };
    if let Some(control) = &inner.control {
        for t in inner.tasks.list_tasks(&live).await?.items {
            if let Err(e) = control.cancel(code, t.id).await {
                tracing::debug!(task = %t.id, error = %e, "task of a deleted organization already ended");
            }
        }
    }
    for ty in ObjectType::ALL {
        loop {
            let mut q = ObjectQuery::new(code.clone(), ty);
            q.limit = 1000;
            let keys: Vec<_> = inner
                .objects
                .query(&q)
                .await?
                .items
                .into_iter()
                .map(|o| o.key)
                .collect();
            if keys.is_empty() {
                break;
            }
            let deleted = inner.objects.delete(code, ty, &keys).await?;
            n.objects += deleted;
            if deleted == 0 {
                break;
            }
        }
    }
    loop {
        let mut q = FileQuery::new(code.clone());
        q.limit = 1000;
        let ids: Vec<_> = inner
            .files
            .query(&q)
            .await?
            .items
            .into_iter()
            .map(|f| f.id)
            .collect();
        if ids.is_empty() {
            break;
        }
        let mut deleted = 0;
        for id in ids {
            if inner.files.delete(id).await? {
                deleted += 1;
            }
        }
        n.files += deleted;
        if deleted == 0 {
            break;
        }
    }
    n.tasks = inner.tasks.delete_org_tasks(code).await?;
    inner.tasks.clear_plugin_overrides(code).await?;
    inner.tasks.clear_rule_state(code).await?;
    Ok(n)
}
