//! `/organizations/`: a token sees its own organization only.

use http::Response;
use serde_json::{Value, json};

use kat_core::org::Organization;

use super::{Ctx, ok, page_of};
use crate::auth::ListScope;
use crate::body::ApiBody;
use crate::error::{ApiError, ApiResult};

fn org_json(o: &Organization) -> Value {
    json!({"id": o.code.as_str(), "code": o.code.as_str(), "name": o.name, "tags": []})
}

/// The caller's organization as stored (or its code alone when it was never stored).
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
