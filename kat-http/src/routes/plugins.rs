//! `/plugins/`: the catalogue (global), list, get, enable, disable.

use http::Response;
use serde_json::{Value, json};

use kat_core::plugin::PluginRecord;

use super::{Ctx, ok, page_of};
use crate::auth::ListScope;
use crate::body::ApiBody;
use crate::error::{ApiError, ApiResult};

fn plugin_json(r: &PluginRecord) -> Value {
    let mut v = serde_json::to_value(&r.def).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert("id".into(), r.def.plugin_id.clone().into());
        m.insert("enabled".into(), r.enabled.into());
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
    let enabled = match ctx.query.one("enabled")? {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::invalid("enabled", "enabled is true or false")),
    };
    let search = p.search.as_ref().map(|s| s.to_lowercase());
    let mut all = ctx.inner.tasks.list_plugins().await?;
    all.retain(|r| {
        enabled.is_none_or(|e| e == r.enabled)
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
    Ok(ctx.page(&p, count, items.iter().map(plugin_json).collect()))
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
    Ok(ok(&plugin_json(&load(ctx, id).await?)))
}

/// `POST /plugins/<id>/enable/` and `/disable/` (permission `plugins.change_plugin`).
pub(crate) async fn set_enabled(
    ctx: &mut Ctx<'_>,
    id: &str,
    enabled: bool,
) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    ctx.require_pk(id)?;
    let mut r = load(ctx, id).await?;
    if enabled && !r.in_source {
        return Err(ApiError::new(
            http::StatusCode::CONFLICT,
            crate::error::ErrorType::Client,
            "conflict",
            format!("plugin {id:?} was removed from the plugin files and cannot be enabled"),
        ));
    }
    if r.enabled != enabled {
        r.enabled = enabled;
        ctx.inner.tasks.put_plugins(vec![r.clone()]).await?;
    }
    Ok(ok(&plugin_json(&r)))
}
