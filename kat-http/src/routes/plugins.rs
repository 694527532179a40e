//! `/plugins/`: the catalogue (global), list, get; enable and disable for the caller's
//! organization (an override of the catalogue's default, which other organizations keep).

use http::Response;
use serde_json::{Value, json};

use kat_core::plugin::PluginRecord;

use super::{Ctx, ok, page_of};
use crate::auth::ListScope;
use crate::body::ApiBody;
use crate::error::{ApiError, ApiResult};

/// A plugin as the caller's organization sees it: `enabled` is whether it runs for that
/// organization, `enabled_by_default` the catalogue's default, `organization_override` the
/// organization's own choice (`null` when it has none).
fn plugin_json(r: &PluginRecord, org_override: Option<bool>) -> Value {
    let mut v = serde_json::to_value(&r.def).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert("id".into(), r.def.plugin_id.clone().into());
        m.insert("enabled".into(), r.enabled_with(org_override).into());
        m.insert("enabled_by_default".into(), r.enabled.into());
        m.insert("organization_override".into(), org_override.into());
        m.insert("in_source".into(), r.in_source.into());
        m.insert("refused".into(), r.refused.clone().into());
    }
    v
}

/// `GET /plugins/` (filters `enabled`, `search` on id and name).
pub(crate) async fn list(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&["enabled", "search", "limit", "offset"])?;
    let p = ctx.list_params()?;
    let scope = ctx.list_scope(&p)?;
    let enabled = ctx.query.flag("enabled")?;
    let search = p.search.as_ref().map(|s| s.to_lowercase());
    let overrides = ctx.inner.tasks.plugin_overrides(ctx.caller.org()).await?;
    let mut all = ctx.inner.tasks.list_plugins().await?;
    all.retain(|r| {
        enabled.is_none_or(|e| e == r.enabled_with(overrides.get(&r.def.plugin_id).copied()))
            && search.as_ref().is_none_or(|s| {
                r.def.plugin_id.to_lowercase().contains(s) || r.def.name.to_lowercase().contains(s)
            })
            && match &scope {
                ListScope::All => true,
                ListScope::Only(pks) => pks.contains(&r.def.plugin_id),
            }
    });
    all.sort_by(|a, b| a.def.plugin_id.cmp(&b.def.plugin_id));
    let (count, items) = page_of(all, &p);
    Ok(ctx.page(
        &p,
        count,
        items
            .iter()
            .map(|r| plugin_json(r, overrides.get(&r.def.plugin_id).copied()))
            .collect(),
    ))
}

async fn load(ctx: &Ctx<'_>, id: &str) -> ApiResult<PluginRecord> {
    ctx.inner
        .tasks
        .get_plugin(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No plugin {id:?}.")))
}

/// `GET /plugins/<id>/`.
pub(crate) async fn retrieve(ctx: &mut Ctx<'_>, id: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    ctx.require_pk(id)?;
    let r = load(ctx, id).await?;
    let ov = org_override(ctx, id).await?;
    Ok(ok(&plugin_json(&r, ov)))
}

async fn org_override(ctx: &Ctx<'_>, id: &str) -> ApiResult<Option<bool>> {
    Ok(ctx
        .inner
        .tasks
        .plugin_overrides(ctx.caller.org())
        .await?
        .get(id)
        .copied())
}

/// `POST /plugins/<id>/enable/` and `/disable/` (permission `plugins.change_plugin`): the caller's
/// organization's override; other organizations and the catalogue's default are untouched.
pub(crate) async fn set_enabled(
    ctx: &mut Ctx<'_>,
    id: &str,
    enabled: bool,
) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    ctx.require_pk(id)?;
    let r = load(ctx, id).await?;
    if enabled && !r.in_source {
        return Err(ApiError::new(
            http::StatusCode::CONFLICT,
            crate::error::ErrorType::Client,
            "conflict",
            format!("plugin {id:?} was removed from the plugin files and cannot be enabled"),
        ));
    }
    ctx.inner
        .tasks
        .set_plugin_override(ctx.caller.org(), id, Some(enabled))
        .await?;
    tracing::info!(plugin = %id, org = %ctx.caller.org(), enabled, "plugin override set");
    Ok(ok(&plugin_json(&r, Some(enabled))))
}
