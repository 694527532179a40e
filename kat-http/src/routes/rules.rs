//! `/business-rules/`: the deployment's business rules (from its rules file), each with whether it
//! runs for the caller's organization; enable and disable one for that organization; run them all
//! over it. Permissions in the original's style (its `BusinessRule` model lives in the `plugins`
//! app): `plugins.view_businessrule` to list, `plugins.change_businessrule` to enable, disable and
//! run.

use http::Response;
use serde_json::{Value, json};

use kat_core::control::TaskControl;
use kat_core::rules::{PassReport, RuleView};

use super::{Ctx, ok, page_of};
use crate::auth::ListScope;
use crate::body::ApiBody;
use crate::error::{ApiError, ApiResult};

fn control<'a>(ctx: &'a Ctx<'_>) -> ApiResult<&'a dyn TaskControl> {
    ctx.inner.control.as_deref().ok_or_else(|| {
        ApiError::unavailable(
            "no engine is running behind this API; business rules cannot be listed or run",
        )
    })
}

fn rule_json(r: &RuleView) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert("id".into(), r.name.clone().into());
    }
    v
}

fn report_json(r: &PassReport) -> Value {
    serde_json::to_value(r).unwrap_or_else(|_| json!({}))
}

async fn find(ctx: &Ctx<'_>, name: &str) -> ApiResult<RuleView> {
    control(ctx)?
        .rules(ctx.caller.org())
        .await?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError::not_found(format!("No business rule {name:?}.")))
}

/// `GET /business-rules/` (filters `enabled`, `search` on name and description).
pub(crate) async fn list(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&["enabled", "search", "limit", "offset"])?;
    let p = ctx.list_params()?;
    let scope = ctx.list_scope(&p)?;
    let enabled = ctx.query.flag("enabled")?;
    let search = p.search.as_ref().map(|s| s.to_lowercase());
    let mut all = control(ctx)?.rules(ctx.caller.org()).await?;
    all.retain(|r| {
        enabled.is_none_or(|e| e == r.enabled)
            && search.as_ref().is_none_or(|s| {
                r.name.to_lowercase().contains(s) || r.description.to_lowercase().contains(s)
            })
            && match &scope {
                ListScope::All => true,
                ListScope::Only(pks) => pks.contains(&r.name),
            }
    });
    let (count, items) = page_of(all, &p);
    Ok(ctx.page(&p, count, items.iter().map(rule_json).collect()))
}

/// `GET /business-rules/<name>/`.
pub(crate) async fn retrieve(ctx: &mut Ctx<'_>, name: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    ctx.require_pk(name)?;
    Ok(ok(&rule_json(&find(ctx, name).await?)))
}

/// `POST /business-rules/<name>/enable/` and `/disable/`: the caller's organization's override,
/// then a pass over the organization so that the rule's findings follow at once. Answers the rule
/// and what the pass did (`pass`).
pub(crate) async fn set_enabled(
    ctx: &mut Ctx<'_>,
    name: &str,
    enabled: bool,
) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    ctx.require_pk(name)?;
    find(ctx, name).await?;
    let report = control(ctx)?
        .set_rule_enabled(ctx.caller.org(), name, Some(enabled))
        .await?;
    tracing::info!(rule = %name, org = %ctx.caller.org(), enabled, "business rule override set");
    let mut v = rule_json(&find(ctx, name).await?);
    v["pass"] = report_json(&report);
    Ok(ok(&v))
}

/// `POST /business-rule-runs/`: a full pass of every rule over the caller's organization.
pub(crate) async fn run(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    ctx.require_create()?;
    let report = control(ctx)?.run_rules(ctx.caller.org()).await?;
    Ok(ok(&report_json(&report)))
}
