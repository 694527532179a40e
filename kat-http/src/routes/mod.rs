//! The handlers, one module per API area, and the request context they share.

mod files;
mod objects;
mod orgs;
mod plugins;
mod schedules;
mod tasks;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use kat_core::permission::Resource;

use crate::Inner;
use crate::auth::{self, Caller};
use crate::body::{self, ApiBody, ReqBody};
use crate::error::{ApiError, ApiResult};
use crate::query::{ListParams, Query, page_links};
use crate::router::{self, Route};

/// The OpenAPI document served at `/api/v1/schema/`.
pub(crate) const OPENAPI: &str = include_str!("../openapi.json");

/// One authenticated request on its way through a handler.
pub(crate) struct Ctx<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) caller: Caller,
    /// `GET` for `HEAD` (hyper drops the body of a HEAD response).
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Query,
    pub(crate) headers: HeaderMap,
    /// In a mutex only so that `&Ctx` is `Sync` (handlers hold it across awaits); taken once.
    body: std::sync::Mutex<Option<ReqBody>>,
}

impl Ctx<'_> {
    /// The public base URL (configured, or from the `Host` header).
    pub(crate) fn base_url(&self) -> String {
        let configured = &self.inner.config.public_base_url;
        if !configured.is_empty() {
            return configured.clone();
        }
        let host = self
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            })
            .unwrap_or("localhost");
        format!("http://{host}")
    }

    /// The request body (once; an empty body after that).
    pub(crate) fn take_body(&self) -> ReqBody {
        self.body
            .lock()
            .ok()
            .and_then(|mut g| g.take())
            .unwrap_or_else(body::empty_request)
    }

    pub(crate) async fn read_json(&mut self) -> ApiResult<Value> {
        let mut b = self.take_body();
        body::read_json(&self.headers, &mut b, self.inner.config.max_json_body).await
    }

    /// The paging parameters of a list.
    pub(crate) fn list_params(&self) -> ApiResult<ListParams> {
        ListParams::parse(
            &self.query,
            self.inner.config.default_limit,
            self.inner.config.max_limit,
        )
    }

    /// `{"count", "next", "previous", "results"}`.
    pub(crate) fn page(
        &self,
        p: &ListParams,
        count: u64,
        results: Vec<Value>,
    ) -> Response<ApiBody> {
        let (next, previous) = page_links(&self.base_url(), &self.path, &self.query, p, count);
        body::json(
            StatusCode::OK,
            &json!({"count": count, "next": next, "previous": previous, "results": results}),
        )
    }

    /// The list permission for `resource` with this request's `search` and `limit`.
    pub(crate) fn list_scope(
        &self,
        resource: Resource,
        p: &ListParams,
    ) -> ApiResult<auth::ListScope> {
        self.caller
            .require_list_for("GET", resource, p.search.as_deref(), p.raw_limit)
    }
}

/// Page a list held in memory.
pub(crate) fn page_of<T>(items: Vec<T>, p: &ListParams) -> (u64, Vec<T>) {
    let count = items.len() as u64;
    let page = items.into_iter().skip(p.offset).take(p.limit).collect();
    (count, page)
}

/// A JSON object body or a 400.
pub(crate) fn object_body(v: Value, what: &str) -> ApiResult<Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::invalid(
            "",
            format!("expected a JSON object ({what})"),
        )),
    }
}

/// Refuse fields not in `known`.
pub(crate) fn only_fields(m: &Map<String, Value>, known: &[&str]) -> ApiResult<()> {
    if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            k.as_str(),
            format!("unknown field {k:?}; known fields: {}", known.join(", ")),
        ));
    }
    Ok(())
}

pub(crate) fn created(v: &Value) -> Response<ApiBody> {
    body::json(StatusCode::CREATED, v)
}

pub(crate) fn ok(v: &Value) -> Response<ApiBody> {
    body::json(StatusCode::OK, v)
}

/// Route, authenticate and run one request.
pub(crate) async fn dispatch(
    inner: &Inner,
    req: Request<ReqBody>,
    span: &tracing::Span,
) -> Response<ApiBody> {
    match run(inner, req, span).await {
        Ok(r) => r,
        Err(e) => body::error(&e),
    }
}

async fn run(
    inner: &Inner,
    req: Request<ReqBody>,
    span: &tracing::Span,
) -> ApiResult<Response<ApiBody>> {
    let (parts, body) = req.into_parts();
    let route = router::match_path(parts.uri.path())?;
    span.record("route", route.pattern());
    route.check_method(&parts.method)?;
    let query = Query::parse(parts.uri.query())?;
    let caller = auth::authenticate(inner.tokens.as_ref(), &parts.headers).await?;
    let method = if parts.method == Method::HEAD {
        Method::GET
    } else {
        parts.method
    };
    let mut ctx = Ctx {
        inner,
        caller,
        method,
        path: parts.uri.path().to_string(),
        query,
        headers: parts.headers,
        body: std::sync::Mutex::new(Some(body)),
    };
    let get = ctx.method == Method::GET;
    let post = ctx.method == Method::POST;
    let patch = ctx.method == Method::PATCH;
    match route {
        Route::Schema => {
            ctx.query.only(&[])?;
            let mut r = Response::new(body::full(OPENAPI));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/vnd.oai.openapi+json"),
            );
            Ok(r)
        }
        Route::ObjectsBulk => objects::bulk_create(&mut ctx).await,
        Route::ObjectList(ty) if get => objects::list(&mut ctx, ty).await,
        Route::ObjectList(ty) if post => objects::create(&mut ctx, ty).await,
        Route::ObjectList(ty) => objects::delete_many(&mut ctx, ty).await,
        Route::ObjectDetail(ty, key) if get => objects::retrieve(&mut ctx, ty, &key).await,
        Route::ObjectDetail(ty, key) if patch => objects::update(&mut ctx, ty, &key).await,
        Route::ObjectDetail(ty, key) => objects::destroy(&mut ctx, ty, &key).await,
        Route::HostnameDnsRecords(key) => objects::delete_dns_records(&mut ctx, &key).await,
        Route::FileList if get => files::list(&mut ctx).await,
        Route::FileList => files::upload(&mut ctx).await,
        Route::FileDetail(id) if get => files::retrieve(&mut ctx, &id).await,
        Route::FileDetail(id) => files::destroy(&mut ctx, &id).await,
        Route::FileDownload(id) => files::download(&mut ctx, &id).await,
        Route::TaskList if get => tasks::list(&mut ctx).await,
        Route::TaskList => tasks::create(&mut ctx).await,
        Route::TaskDetail(id) => tasks::retrieve(&mut ctx, &id).await,
        Route::TaskCancel(id) => tasks::cancel(&mut ctx, &id).await,
        Route::ScheduleList if get => schedules::list(&mut ctx).await,
        Route::ScheduleList => schedules::create(&mut ctx).await,
        Route::ScheduleDetail(id) if get => schedules::retrieve(&mut ctx, &id).await,
        Route::ScheduleDetail(id) if patch => schedules::update(&mut ctx, &id).await,
        Route::ScheduleDetail(id) => schedules::destroy(&mut ctx, &id).await,
        Route::ObjectSetList if get => schedules::list_sets(&mut ctx).await,
        Route::ObjectSetList => schedules::create_set(&mut ctx).await,
        Route::ObjectSetDetail(id) if get => schedules::retrieve_set(&mut ctx, &id).await,
        Route::ObjectSetDetail(id) if patch => schedules::update_set(&mut ctx, &id).await,
        Route::ObjectSetDetail(id) => schedules::destroy_set(&mut ctx, &id).await,
        Route::PluginList => plugins::list(&mut ctx).await,
        Route::PluginDetail(id) => plugins::retrieve(&mut ctx, &id).await,
        Route::PluginEnable(id) => plugins::set_enabled(&mut ctx, &id, true).await,
        Route::PluginDisable(id) => plugins::set_enabled(&mut ctx, &id, false).await,
        Route::OrgList => orgs::list(&mut ctx).await,
        Route::OrgDetail(code) => orgs::retrieve(&mut ctx, &code).await,
    }
}
