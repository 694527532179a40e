//! The handlers, one module per API area, and the request context they share. Which handler
//! answers which path and method, and with which permission, is the route table's
//! ([`crate::router::ROUTES`]).

pub(crate) mod files;
pub(crate) mod objects;
pub(crate) mod orgs;
pub(crate) mod plugins;
pub(crate) mod rules;
pub(crate) mod schedules;
pub(crate) mod schema;
pub(crate) mod tasks;

use http::{HeaderMap, Request, Response, StatusCode};
use serde_json::{Map, Value};

use kat_core::object::ObjectType;
use kat_core::permission::PermissionName;

use crate::Inner;
use crate::auth::{self, Caller};
use crate::body::{self, ApiBody, ReqBody};
use crate::error::{ApiError, ApiResult};
use crate::query::{ListParams, Query, page_links};
use crate::router::{self, Route};

/// One authenticated request on its way through a handler.
pub(crate) struct Ctx<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) caller: Caller,
    /// The route table's entry that matched.
    pub(crate) route: &'static Route,
    /// The path's `{type}`, when the pattern has one.
    pub(crate) path_type: Option<ObjectType>,
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
    pub(crate) fn page<T: serde::Serialize>(
        &self,
        p: &ListParams,
        count: u64,
        results: Vec<T>,
    ) -> Response<ApiBody> {
        /// A page, its keys in the order of a JSON map's.
        #[derive(serde::Serialize)]
        struct PageOut<T> {
            count: u64,
            next: Option<String>,
            previous: Option<String>,
            results: Vec<T>,
        }
        let (next, previous) = page_links(&self.base_url(), &self.path, &self.query, p, count);
        body::json(
            StatusCode::OK,
            &PageOut {
                count,
                next,
                previous,
                results,
            },
        )
    }

    /// The permission the route table names for this request (for the path's `{type}` where the
    /// rule derives it from the object type).
    pub(crate) fn permission(&self) -> ApiResult<PermissionName> {
        self.route
            .permission
            .name(self.path_type)
            .ok_or_else(|| self.no_permission())
    }

    /// The permission the route table's rule gives for objects of type `ty` (routes whose
    /// permission depends on the types the request names: a bulk body's keys, DNS record types).
    pub(crate) fn permission_for(&self, ty: ObjectType) -> ApiResult<PermissionName> {
        self.route
            .permission
            .name(Some(ty))
            .ok_or_else(|| self.no_permission())
    }

    fn no_permission(&self) -> ApiError {
        tracing::error!(
            route = self.route.pattern,
            method = %self.route.method,
            "route table: the handler checks a permission its entry does not name"
        );
        ApiError::internal()
    }

    /// The route's permission for one object or file, by pk.
    pub(crate) fn require_pk(&self, pk: &str) -> ApiResult<()> {
        self.caller.require_pk(self.permission()?, pk)
    }

    /// The route's permission for a list with this request's `search` and `limit`.
    pub(crate) fn list_scope(&self, p: &ListParams) -> ApiResult<auth::ListScope> {
        self.caller
            .require_list(self.permission()?, p.search.as_deref(), p.raw_limit)
    }

    /// The route's permission for creating something whose pk is not known yet.
    pub(crate) fn require_create(&self) -> ApiResult<()> {
        self.caller.require_create(self.permission()?)
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

pub(crate) fn created<T: serde::Serialize + ?Sized>(v: &T) -> Response<ApiBody> {
    body::json(StatusCode::CREATED, v)
}

pub(crate) fn ok<T: serde::Serialize + ?Sized>(v: &T) -> Response<ApiBody> {
    body::json(StatusCode::OK, v)
}

/// Route, authenticate and run one request.
pub(crate) async fn dispatch(
    inner: &Inner,
    req: Request<ReqBody>,
    span: &tracing::Span,
    route: &std::sync::OnceLock<&'static str>,
) -> Response<ApiBody> {
    match run(inner, req, span, route).await {
        Ok(r) => r,
        Err(e) => body::error(&e),
    }
}

async fn run(
    inner: &Inner,
    req: Request<ReqBody>,
    span: &tracing::Span,
    route: &std::sync::OnceLock<&'static str>,
) -> ApiResult<Response<ApiBody>> {
    let (parts, body) = req.into_parts();
    let matched = router::match_path(parts.uri.path())?;
    span.record("route", matched.pattern.text);
    let _ = route.set(matched.pattern.text);
    let route = matched.route(&parts.method)?;
    let query = Query::parse(parts.uri.query())?;
    let caller =
        auth::authenticate(inner.tokens.as_ref(), inner.tasks.as_ref(), &parts.headers).await?;
    let mut ctx = Ctx {
        inner,
        caller,
        route,
        path_type: matched.params.path_type(),
        path: parts.uri.path().to_string(),
        query,
        headers: parts.headers,
        body: std::sync::Mutex::new(Some(body)),
    };
    let result = (route.handler)(&mut ctx, &matched.params).await;
    if let Err(e) = &result
        && e.status == StatusCode::FORBIDDEN
        && let Some(task) = ctx.caller.task()
    {
        record_refusal(inner, task, &parts.method, &ctx.path, e).await;
    }
    result
}

/// Count a task token's refused call on its task (decisions: refused calls are visible), so that a
/// task whose writes were refused never looks like a clean success. Only a running task records
/// one; a failure to record is logged, never the caller's problem.
async fn record_refusal(
    inner: &Inner,
    task: kat_core::task::TaskId,
    method: &http::Method,
    path: &str,
    e: &ApiError,
) {
    let why = match &e.attr {
        Some(attr) => format!("{method} {path}: 403 {} ({attr})", e.detail),
        None => format!("{method} {path}: 403 {}", e.detail),
    };
    tracing::warn!(%task, refusal = %why, "a task's API call was refused");
    let patch = kat_core::task::TaskPatch::refused_call(why);
    if let Err(err) = inner
        .tasks
        .transition_task(task, &[kat_core::task::TaskState::Running], patch)
        .await
    {
        tracing::debug!(%task, error = %err, "the refusal was not recorded on the task");
    }
}
