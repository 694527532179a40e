//! # kat-http
//!
//! The API that plugin containers (and people, with an operator token) call: objects, files, tasks,
//! schedules, object sets, plugins and organizations under `/api/v1/`, wire-compatible with OpenKAT
//! v2's, on hyper 1.x. Every request carries a short-lived JWT (`Authorization: Token <jwt>` or
//! `Bearer <jwt>`) whose permissions are scoped to one task and one organization; [`JwtAuthority`]
//! mints and verifies them.
//!
//! - [`Api`]: the request handler over the kat-core stores; [`Api::serve`] runs it on a listener with
//!   graceful shutdown.
//! - [`JwtAuthority`]: the [`TokenAuthority`] on jsonwebtoken (HS256 or EdDSA, algorithm fixed by the
//!   verifier, every claim required, revocation through a [`RevocationList`](kat_core::store::RevocationList)).
//! - [`mint_operator_token`]: a token for a person, for `katd token`.
//!
//! Errors are always `{"type": "client_error"|"validation_error"|"server_error", "errors":
//! [{"code", "detail", "attr"}]}`: 401 for a missing or bad token, 403 for a missing permission, 400
//! for bad input (with `attr` naming the field, such as `hostname[2].name`), 404, 405, 408 (a body
//! that stalled or trickled, cut after [`ApiConfig::body_idle_timeout`] or below
//! [`ApiConfig::body_min_rate`]), 413, 503.
//! The full route list is served as OpenAPI 3 at `/api/v1/schema/` and described in
//! `docs/http-api.md`.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use kat_core::memory::{MemoryFileStore, MemoryObjectStore, MemoryTaskStore};
//! use kat_core::org::{OrgCode, Organization};
//! use kat_core::store::OrgStore;
//! use kat_http::{all_permissions, mint_operator_token, Api, ApiConfig, JwtAuthority};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let tasks = Arc::new(MemoryTaskStore::default());
//! // Tokens are accepted only for organizations that exist.
//! tasks.put_organization(Organization::new(OrgCode::new("acme")?, "Acme")).await?;
//! let tokens = Arc::new(JwtAuthority::hs256(&[42u8; 32], tasks.clone())?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let api = Api::new(
//!     Arc::new(MemoryObjectStore::default()),
//!     Arc::new(MemoryFileStore::default()),
//!     tasks,
//!     tokens.clone(),
//!     None, // no engine: task submission answers 503
//!     ApiConfig::new(format!("http://{addr}")),
//! );
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(api.serve(listener, async { let _ = stopped.await; }));
//!
//! // What `katd token` prints, for curl:
//! let token = mint_operator_token(tokens.as_ref(), "alice", OrgCode::new("acme")?, all_permissions(), Duration::from_secs(600))?;
//! assert!(!token.is_empty());
//! // curl -H "Authorization: Token $TOKEN" http://ADDR/api/v1/objects/hostname/
//!
//! let _ = stop.send(());
//! server.await.expect("server task")?;
//! # Ok::<(), kat_core::Error>(())
//! # }).unwrap();
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod auth;
mod body;
mod error;
mod jwt;
mod multipart;
mod query;
mod router;
mod routes;
mod server;
mod timed;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt as _;
use http::{Request, Response};
use http_body_util::BodyExt;

use kat_core::control::TaskControl;
use kat_core::store::{FileStore, ObjectStore, TaskStore};
use kat_core::token::TokenAuthority;

pub use body::{ApiBody, BoxError};
pub use jwt::{
    DEFAULT_CACHE_CAPACITY, JwtAuthority, JwtError, LEEWAY_SECS, MAX_OPERATOR_TTL, MAX_TOKEN_BYTES,
    MIN_SECRET_BYTES, all_permissions, mint_operator_token,
};

use crate::error::ApiError;

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The URL clients reach the API at (`http://kat:8000`), without the `/api/v1` prefix: the base of
    /// the absolute `next`/`previous` links and of each file's `file` download URL. Empty: taken from
    /// the request's `Host` header.
    pub public_base_url: String,
    /// Largest JSON request body, in bytes (default 4 MiB); larger is a 413.
    pub max_json_body: usize,
    /// Largest uploaded file, in bytes (default 4 GiB); larger is a 413.
    pub max_upload: u64,
    /// Page size of lists when the request gives no `limit` (default 100).
    pub default_limit: usize,
    /// Largest page size; a larger `limit` is capped to it (default 1000).
    pub max_limit: usize,
    /// Largest request head (request line and headers), in bytes (default 32 KiB); larger gets hyper's
    /// 431. Tokens are capped separately at [`MAX_TOKEN_BYTES`].
    pub max_header_bytes: usize,
    /// Where an upload whose `type` field comes after its file part is spooled (as `kat-upload-*`
    /// files) until the body is complete (default: the system's temporary directory). When set, it
    /// is a directory of this API's own: [`Api::serve`] creates it and removes the `kat-upload-*`
    /// files a killed process left in it before it accepts connections. `kat::deploy` puts it in
    /// the data directory.
    pub spool_dir: Option<std::path::PathBuf>,
    /// Longest time to receive a request head (request line and headers) once a connection is
    /// open or a previous request answered (default 30 s); a slower head has its connection closed.
    pub header_read_timeout: Duration,
    /// Longest wait for the next bytes of a request body (default 30 s), and the grace before
    /// [`ApiConfig::body_min_rate`] applies. A body that stalls longer is cut: 408.
    pub body_idle_timeout: Duration,
    /// Slowest average rate of a request body in bytes per second, counted from the start of the
    /// request after the grace of [`ApiConfig::body_idle_timeout`] (default 1024; 0: no minimum). A
    /// body that trickles slower is cut: 408.
    pub body_min_rate: u64,
    /// Longest time to receive a whole request body (default 1 hour). A longer one is cut: 408.
    pub body_timeout: Duration,
    /// How long [`Api::serve`] waits for requests in flight after shutdown is asked (default 30 s).
    pub shutdown_grace: Duration,
}

impl ApiConfig {
    /// The defaults with this public base URL.
    pub fn new(public_base_url: impl Into<String>) -> Self {
        ApiConfig {
            public_base_url: public_base_url.into(),
            ..ApiConfig::default()
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            public_base_url: String::new(),
            max_json_body: 4 * 1024 * 1024,
            max_upload: 4 * 1024 * 1024 * 1024,
            default_limit: kat_core::store::DEFAULT_LIMIT,
            max_limit: 1000,
            max_header_bytes: 32 * 1024,
            spool_dir: None,
            header_read_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(30),
            body_min_rate: 1024,
            body_timeout: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) objects: Arc<dyn ObjectStore>,
    pub(crate) files: Arc<dyn FileStore>,
    pub(crate) tasks: Arc<dyn TaskStore>,
    pub(crate) tokens: Arc<dyn TokenAuthority>,
    pub(crate) control: Option<Arc<dyn TaskControl>>,
    pub(crate) config: ApiConfig,
    /// Serializes creating and deleting organizations (a check, then a write).
    pub(crate) org_admin: tokio::sync::Mutex<()>,
    /// What `GET /metrics` shows; requests are counted into it.
    pub(crate) metrics: Arc<kat_core::metrics::Metrics>,
    /// The scan level a task's outputs carry, by task, with the object store's change mark it was
    /// computed at (see `routes::files::upload_level`): a mode 3 task uploads one file per target,
    /// and each would otherwise read every input object's level again.
    pub(crate) output_levels:
        std::sync::Mutex<std::collections::HashMap<kat_core::task::TaskId, OutputLevel>>,
}

/// A task's output level ([`kat_core::chain::level_of_output`]) and the object store's change mark
/// it was read at.
pub(crate) type OutputLevel = (
    u64,
    (
        Option<kat_core::object::ScanLevel>,
        kat_core::store::LevelSource,
    ),
);

/// The API: routes requests to the stores, the engine's [`TaskControl`] and the token authority.
/// Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("config", &self.inner.config)
            .field("engine", &self.inner.control.is_some())
            .finish_non_exhaustive()
    }
}

impl Api {
    /// An API over these stores. `control` is the engine; without one, routes that need it
    /// (`POST /tasks/`, cancel) answer 503 and stored files trigger nothing.
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        files: Arc<dyn FileStore>,
        tasks: Arc<dyn TaskStore>,
        tokens: Arc<dyn TokenAuthority>,
        control: Option<Arc<dyn TaskControl>>,
        config: ApiConfig,
    ) -> Self {
        let mut config = config;
        while config.public_base_url.ends_with('/') {
            config.public_base_url.pop();
        }
        config.max_limit = config.max_limit.max(1);
        config.default_limit = config.default_limit.clamp(1, config.max_limit);
        Api {
            inner: Arc::new(Inner {
                objects,
                files,
                tasks,
                tokens,
                control,
                config,
                org_admin: tokio::sync::Mutex::new(()),
                metrics: Arc::new(kat_core::metrics::Metrics::new()),
                output_levels: std::sync::Mutex::new(std::collections::HashMap::new()),
            }),
        }
    }

    /// The same API counting into `metrics` (shared with the engine, so that `GET /metrics` shows
    /// both). Call it on the API as [`Api::new`] returned it, before cloning it: clones made before
    /// keep counting into the metrics they had.
    pub fn with_metrics(mut self, metrics: Arc<kat_core::metrics::Metrics>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.metrics = metrics,
            None => {
                let i = &self.inner;
                self.inner = Arc::new(Inner {
                    objects: i.objects.clone(),
                    files: i.files.clone(),
                    tasks: i.tasks.clone(),
                    tokens: i.tokens.clone(),
                    control: i.control.clone(),
                    config: i.config.clone(),
                    org_admin: tokio::sync::Mutex::new(()),
                    metrics,
                    output_levels: std::sync::Mutex::new(std::collections::HashMap::new()),
                });
            }
        }
        self
    }

    /// The metrics this API counts into and `GET /metrics` shows.
    pub fn metrics(&self) -> &Arc<kat_core::metrics::Metrics> {
        &self.inner.metrics
    }

    /// The settings in force.
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    /// Serve HTTP/1.1 on `listener` until `shutdown` completes, then stop accepting, let requests in
    /// flight finish (at most [`ApiConfig::shutdown_grace`]) and return. First, leftover spooled
    /// uploads in [`ApiConfig::spool_dir`] are removed.
    ///
    /// # Errors
    /// Only if the listener itself fails for good; a failing connection is logged and dropped.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), kat_core::Error> {
        server::serve(self, listener, shutdown).await
    }

    /// Handle one request: route it, authenticate it, check its permission, run it. Never fails and
    /// never panics outward: every problem is a response in the standard error shape.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ApiBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let start = Instant::now();
        let method = req.method().clone();
        let span = tracing::info_span!(
            "request",
            method = %method,
            route = tracing::field::Empty,
            status = tracing::field::Empty,
            latency_us = tracing::field::Empty,
        );
        let cfg = &self.inner.config;
        let limits = timed::BodyLimits {
            idle: cfg.body_idle_timeout,
            min_rate: cfg.body_min_rate,
            total: cfg.body_timeout,
        };
        let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let progress = read.clone();
        let req = req.map(move |b| {
            timed::TimedBody::new(b.map_err(Into::into).boxed_unsync(), limits, progress)
                .boxed_unsync()
        });
        if req.uri().path() == "/metrics" {
            return self.metrics_response(req.method(), start).await;
        }
        let route = std::sync::OnceLock::new();
        let fut = routes::dispatch(&self.inner, req, &span, &route);
        let mut response = match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(parent: &span, "a request handler panicked");
                body::error(&ApiError::internal())
            }
        };
        let status = response.status().as_u16();
        let latency = start.elapsed();
        let pattern = route.get().copied().unwrap_or("unmatched");
        self.inner
            .metrics
            .request(pattern, method.as_str(), status, latency);
        span.record("status", status);
        span.record("latency_us", latency.as_micros() as u64);
        if response.status() == http::StatusCode::REQUEST_TIMEOUT {
            // The rest of the body is not worth waiting for: answer, then close the connection.
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            tracing::warn!(
                parent: &span,
                bytes_read = read.load(std::sync::atomic::Ordering::Relaxed),
                "request cut: its body stalled or arrived too slowly"
            );
        } else if status >= 500 {
            tracing::warn!(parent: &span, "request failed");
        } else {
            tracing::info!(parent: &span, "request");
        }
        response
    }

    /// `GET /metrics`: the metrics in the OpenMetrics text format, without a token (labels carry
    /// plugin ids, route patterns and states, never an organization or an object; see
    /// docs/decisions.md). The queue depth is read from the store first.
    async fn metrics_response(&self, method: &http::Method, start: Instant) -> Response<ApiBody> {
        let m = &self.inner.metrics;
        if method != http::Method::GET && method != http::Method::HEAD {
            let e = ApiError::method_not_allowed(method, &["GET", "HEAD"]);
            m.request("/metrics", method.as_str(), 405, start.elapsed());
            return body::error(&e);
        }
        let q = kat_core::store::TaskQuery {
            states: Some(vec![kat_core::task::TaskState::Queued]),
            limit: 1,
            ..kat_core::store::TaskQuery::default()
        };
        match self.inner.tasks.list_tasks(&q).await {
            Ok(page) => m.set_queued(page.count),
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count the queued tasks"),
        }
        m.request("/metrics", method.as_str(), 200, start.elapsed());
        let text = m.render();
        let mut r = Response::new(body::full(Bytes::from(text)));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(kat_core::metrics::CONTENT_TYPE),
        );
        r
    }
}
