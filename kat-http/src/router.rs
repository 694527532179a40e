//! The route table: [`ROUTES`] holds every operation of the API under `/api/v1/`, one [`Route`]
//! per (path pattern, method), with its handler, the permission it needs and its summary.
//!
//! The table is the one source of truth for routes. It drives:
//! - path matching ([`match_path`]) and dispatch (each entry's [`Route::handler`]);
//! - the 405 answer and its `Allow` header ([`Matched::route`]: the methods of the entries that
//!   share the matched pattern, `HEAD` wherever `GET` is);
//! - the permission a handler checks ([`Route::permission`], resolved by
//!   [`crate::routes::Ctx::permission`]; the checks themselves are [`crate::auth::Caller`]'s);
//! - the OpenAPI document served at `/api/v1/schema/` (`routes/schema.rs` builds it from the table).
//!
//! To add an operation: write its handler in `routes/`, add its entry here, and describe its
//! request and response in `routes/schema.rs` when the defaults there do not fit.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use http::{Method, Response};

use kat_core::object::ObjectType;
use kat_core::permission::{Action, PermissionName, Resource};

use crate::body::ApiBody;
use crate::error::{ApiError, ApiResult};
use crate::query::decode_segment;
use crate::routes::{Ctx, files, objects, orgs, plugins, rules, schedules, schema, tasks};

use Action::{Add, Change, Delete, View};
use Permission::{BodyTypes, On, PathType, RecordTypes, Token};

/// The API prefix.
pub(crate) const PREFIX: &str = "/api/v1";

/// The path parameter that names an object type: matched only by a known type (else a 404).
pub(crate) const OBJECT_TYPE_PARAM: &str = "type";

/// First path segments that are aliases of another (the original's spellings): `/files/` is
/// `/file/`, `/task/` is `/tasks/`, `/organization/` is `/organizations/`.
pub(crate) const ALIASES: &[(&str, &str)] = &[
    ("files", "file"),
    ("task", "tasks"),
    ("organization", "organizations"),
];

/// What a handler returns.
pub(crate) type HandlerFuture<'r> =
    Pin<Box<dyn Future<Output = ApiResult<Response<ApiBody>>> + Send + 'r>>;

/// A handler: the request context and the decoded path parameters.
pub(crate) type Handler = for<'r, 'i> fn(&'r mut Ctx<'i>, &'r Params) -> HandlerFuture<'r>;

/// The permission a route needs, or the rule that derives it from the object type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permission {
    /// A valid token, and no permission.
    Token,
    /// `action` on `resource` (`files.view_file`, `tasks.change_task`, ...).
    On(Action, Resource),
    /// `objects.<action>_<type>` for the path's `{type}`.
    PathType(Action),
    /// `objects.<action>_<type>` for every object type the body names (its top-level keys).
    BodyTypes(Action),
    /// `objects.<action>_<record type>` for every DNS record the request touches.
    RecordTypes(Action),
}

impl Permission {
    /// The permission name for a request about objects of type `ty` (the path's `{type}` or a type
    /// the request names); `None` for [`Permission::Token`] and for an object rule without a type.
    pub(crate) fn name(self, ty: Option<ObjectType>) -> Option<PermissionName> {
        match self {
            Permission::Token => None,
            Permission::On(action, resource) => Some(PermissionName::new(action, resource)),
            Permission::PathType(action)
            | Permission::BodyTypes(action)
            | Permission::RecordTypes(action) => {
                ty.map(|t| PermissionName::new(action, Resource::Object(t)))
            }
        }
    }
}

/// One operation of the API.
#[derive(Debug)]
pub(crate) struct Route {
    /// The path pattern, as in the OpenAPI document: `/api/v1/objects/{type}/{key}/`.
    pub(crate) pattern: &'static str,
    /// The method (`HEAD` is answered wherever `GET` is, by the `GET` entry).
    pub(crate) method: Method,
    /// What answers it.
    pub(crate) handler: Handler,
    /// What the caller needs.
    pub(crate) permission: Permission,
    /// One line for the OpenAPI document.
    pub(crate) summary: &'static str,
}

/// A [`Handler`] from a call: `handler!(|ctx, p| objects::list(ctx, p.object_type()?))`.
macro_rules! handler {
    (|$ctx:ident, $p:pat_param| $call:expr) => {{
        fn handler<'r, 'i>($ctx: &'r mut Ctx<'i>, $p: &'r Params) -> HandlerFuture<'r> {
            Box::pin(async move { $call.await })
        }
        handler as Handler
    }};
}

/// Every operation of the API. Entries that share a pattern stay together, in the order of their
/// `Allow` header.
pub(crate) static ROUTES: &[Route] = &[
    Route {
        pattern: "/api/v1/schema/",
        method: Method::GET,
        handler: handler!(|ctx, _| schema::get(ctx)),
        permission: Token,
        summary: "This OpenAPI document",
    },
    // ------------------------------------------------------------------------ scan levels
    Route {
        pattern: "/api/v1/levels/recompute/",
        method: Method::POST,
        handler: handler!(|ctx, _| objects::recompute_levels(ctx)),
        permission: On(Action::CanSet, Resource::ScanLevel),
        summary: "Recompute every inherited scan level of the caller's organization from the declared levels and the DNS relations (operators only); answers {\"changed\": n}, 0 when every write's incremental update was complete",
    },
    // ------------------------------------------------------------------------ objects
    Route {
        pattern: "/api/v1/objects/",
        method: Method::POST,
        handler: handler!(|ctx, _| objects::bulk_create(ctx)),
        permission: BodyTypes(Add),
        summary: "Bulk upsert objects, all or nothing: {\"<type>\": [ {...} ]} answered with the same keys",
    },
    Route {
        pattern: "/api/v1/objects/{type}/",
        method: Method::GET,
        handler: handler!(|ctx, p| objects::list(ctx, p.object_type()?)),
        permission: PathType(View),
        summary: "List objects; field filters take repeated parameters and natural keys for relations; unknown parameters are a 400",
    },
    Route {
        pattern: "/api/v1/objects/{type}/",
        method: Method::POST,
        handler: handler!(|ctx, p| objects::create(ctx, p.object_type()?)),
        permission: PathType(Add),
        summary: "Create one object or a list (answered in the same shape)",
    },
    Route {
        pattern: "/api/v1/objects/{type}/",
        method: Method::DELETE,
        handler: handler!(|ctx, p| objects::delete_many(ctx, p.object_type()?)),
        permission: PathType(Delete),
        summary: "Delete the listed objects; no id is a 400 (never 'delete all')",
    },
    Route {
        pattern: "/api/v1/objects/{type}/{key}/",
        method: Method::GET,
        handler: handler!(|ctx, p| objects::retrieve(ctx, p.object_type()?, p.get("key")?)),
        permission: PathType(View),
        summary: "Get one object",
    },
    Route {
        pattern: "/api/v1/objects/{type}/{key}/",
        method: Method::PATCH,
        handler: handler!(|ctx, p| objects::update(ctx, p.object_type()?, p.get("key")?)),
        permission: PathType(Change),
        summary: "Change scan_level (0-4, or null for inherited; network, hostname, ipaddress) and non-key attributes",
    },
    Route {
        pattern: "/api/v1/objects/{type}/{key}/",
        method: Method::DELETE,
        handler: handler!(|ctx, p| objects::destroy(ctx, p.object_type()?, p.get("key")?)),
        permission: PathType(Delete),
        summary: "Delete one object",
    },
    Route {
        pattern: "/api/v1/objects/hostname/{key}/dnsrecord/",
        method: Method::DELETE,
        handler: handler!(|ctx, p| objects::delete_dns_records(ctx, p.get("key")?)),
        permission: RecordTypes(Delete),
        summary: "Delete DNS records of this hostname only",
    },
    // ------------------------------------------------------------------------ files
    Route {
        pattern: "/api/v1/file/",
        method: Method::GET,
        handler: handler!(|ctx, _| files::list(ctx)),
        permission: On(View, Resource::File),
        summary: "List files",
    },
    Route {
        pattern: "/api/v1/file/",
        method: Method::POST,
        handler: handler!(|ctx, _| files::upload(ctx)),
        permission: On(Add, Resource::File),
        summary: "Upload a file (multipart/form-data: part 'file', optional field 'type'), streamed; org and task come from the token",
    },
    Route {
        pattern: "/api/v1/file/{id}/",
        method: Method::GET,
        handler: handler!(|ctx, p| files::retrieve(ctx, p.get("id")?)),
        permission: On(View, Resource::File),
        summary: "File metadata; 'file' is the absolute URL of the download route",
    },
    Route {
        pattern: "/api/v1/file/{id}/",
        method: Method::DELETE,
        handler: handler!(|ctx, p| files::destroy(ctx, p.get("id")?)),
        permission: On(Delete, Resource::File),
        summary: "Delete a file",
    },
    Route {
        pattern: "/api/v1/file/{id}/download/",
        method: Method::GET,
        handler: handler!(|ctx, p| files::download(ctx, p.get("id")?)),
        permission: On(View, Resource::File),
        summary: "Download the contents (streamed, authenticated)",
    },
    // ------------------------------------------------------------------------ tasks
    Route {
        pattern: "/api/v1/tasks/",
        method: Method::GET,
        handler: handler!(|ctx, _| tasks::list(ctx)),
        permission: On(View, Resource::Task),
        summary: "List tasks",
    },
    Route {
        pattern: "/api/v1/tasks/",
        method: Method::POST,
        handler: handler!(|ctx, _| tasks::create(ctx)),
        permission: On(Add, Resource::Task),
        summary: "Queue a plugin run: {\"type\": \"plugin\", \"data\": {\"plugin_id\": \"dns\", \"input_data\": \"internet|example.com\"}} (input_data: string, list or null), or a list of them",
    },
    Route {
        pattern: "/api/v1/replicas/",
        method: Method::GET,
        handler: handler!(|ctx, _| tasks::replicas(ctx)),
        permission: On(View, Resource::Task),
        summary: "The katd replicas sharing the store: roles, last heartbeat, running tasks",
    },
    Route {
        pattern: "/api/v1/tasks/{id}/",
        method: Method::GET,
        handler: handler!(|ctx, p| tasks::retrieve(ctx, p.get("id")?)),
        permission: On(View, Resource::Task),
        summary: "Get a task",
    },
    Route {
        pattern: "/api/v1/tasks/{id}/cancel/",
        method: Method::POST,
        handler: handler!(|ctx, p| tasks::cancel(ctx, p.get("id")?)),
        permission: On(Change, Resource::Task),
        summary: "Cancel a task",
    },
    // ------------------------------------------------------------------------ schedules
    Route {
        pattern: "/api/v1/schedules/",
        method: Method::GET,
        handler: handler!(|ctx, _| schedules::list(ctx)),
        permission: On(View, Resource::Schedule),
        summary: "List schedules",
    },
    Route {
        pattern: "/api/v1/schedules/",
        method: Method::POST,
        handler: handler!(|ctx, _| schedules::create(ctx)),
        permission: On(Add, Resource::Schedule),
        summary: "Create a schedule {plugin_id, object_set_id, interval (ISO 8601, e.g. PT24H), enabled}",
    },
    Route {
        pattern: "/api/v1/schedules/{id}/",
        method: Method::GET,
        handler: handler!(|ctx, p| schedules::retrieve(ctx, p.get("id")?)),
        permission: On(View, Resource::Schedule),
        summary: "Get a schedule",
    },
    Route {
        pattern: "/api/v1/schedules/{id}/",
        method: Method::PATCH,
        handler: handler!(|ctx, p| schedules::update(ctx, p.get("id")?)),
        permission: On(Change, Resource::Schedule),
        summary: "Change a schedule",
    },
    Route {
        pattern: "/api/v1/schedules/{id}/",
        method: Method::DELETE,
        handler: handler!(|ctx, p| schedules::destroy(ctx, p.get("id")?)),
        permission: On(Delete, Resource::Schedule),
        summary: "Delete a schedule",
    },
    // ------------------------------------------------------------------------ object sets
    Route {
        pattern: "/api/v1/object-sets/",
        method: Method::GET,
        handler: handler!(|ctx, _| schedules::list_sets(ctx)),
        permission: On(View, Resource::ObjectSet),
        summary: "List object sets",
    },
    Route {
        pattern: "/api/v1/object-sets/",
        method: Method::POST,
        handler: handler!(|ctx, _| schedules::create_set(ctx)),
        permission: On(Add, Resource::ObjectSet),
        summary: "Create an object set {name, description, object_type, all, filters: {field: [values]}, keys: [...]}",
    },
    Route {
        pattern: "/api/v1/object-sets/{id}/",
        method: Method::GET,
        handler: handler!(|ctx, p| schedules::retrieve_set(ctx, p.get("id")?)),
        permission: On(View, Resource::ObjectSet),
        summary: "Get an object set",
    },
    Route {
        pattern: "/api/v1/object-sets/{id}/",
        method: Method::PATCH,
        handler: handler!(|ctx, p| schedules::update_set(ctx, p.get("id")?)),
        permission: On(Change, Resource::ObjectSet),
        summary: "Change an object set",
    },
    Route {
        pattern: "/api/v1/object-sets/{id}/",
        method: Method::DELETE,
        handler: handler!(|ctx, p| schedules::destroy_set(ctx, p.get("id")?)),
        permission: On(Delete, Resource::ObjectSet),
        summary: "Delete an object set (409 while a schedule uses it)",
    },
    // ------------------------------------------------------------------------ plugins
    Route {
        pattern: "/api/v1/plugins/",
        method: Method::GET,
        handler: handler!(|ctx, _| plugins::list(ctx)),
        permission: On(View, Resource::Plugin),
        summary: "List plugins",
    },
    Route {
        pattern: "/api/v1/plugins/{id}/",
        method: Method::GET,
        handler: handler!(|ctx, p| plugins::retrieve(ctx, p.get("id")?)),
        permission: On(View, Resource::Plugin),
        summary: "Get a plugin",
    },
    Route {
        pattern: "/api/v1/plugins/{id}/enable/",
        method: Method::POST,
        handler: handler!(|ctx, p| plugins::set_enabled(ctx, p.get("id")?, true)),
        permission: On(Change, Resource::Plugin),
        summary: "Enable a plugin",
    },
    Route {
        pattern: "/api/v1/plugins/{id}/disable/",
        method: Method::POST,
        handler: handler!(|ctx, p| plugins::set_enabled(ctx, p.get("id")?, false)),
        permission: On(Change, Resource::Plugin),
        summary: "Disable a plugin",
    },
    // ------------------------------------------------------------------------ business rules
    Route {
        pattern: "/api/v1/business-rules/",
        method: Method::GET,
        handler: handler!(|ctx, _| rules::list(ctx)),
        permission: On(View, Resource::BusinessRule),
        summary: "List business rules, each with whether it runs for the caller's organization",
    },
    Route {
        pattern: "/api/v1/business-rule-runs/",
        method: Method::POST,
        handler: handler!(|ctx, _| rules::run(ctx)),
        permission: On(Change, Resource::BusinessRule),
        summary: "Run every business rule over the caller's organization",
    },
    Route {
        pattern: "/api/v1/business-rules/{id}/",
        method: Method::GET,
        handler: handler!(|ctx, p| rules::retrieve(ctx, p.get("id")?)),
        permission: On(View, Resource::BusinessRule),
        summary: "Get a business rule",
    },
    Route {
        pattern: "/api/v1/business-rules/{id}/enable/",
        method: Method::POST,
        handler: handler!(|ctx, p| rules::set_enabled(ctx, p.get("id")?, true)),
        permission: On(Change, Resource::BusinessRule),
        summary: "Enable a business rule for the caller's organization",
    },
    Route {
        pattern: "/api/v1/business-rules/{id}/disable/",
        method: Method::POST,
        handler: handler!(|ctx, p| rules::set_enabled(ctx, p.get("id")?, false)),
        permission: On(Change, Resource::BusinessRule),
        summary: "Disable a business rule for the caller's organization",
    },
    // ------------------------------------------------------------------------ organizations
    Route {
        pattern: "/api/v1/organizations/",
        method: Method::GET,
        handler: handler!(|ctx, _| orgs::list(ctx)),
        permission: On(View, Resource::Organization),
        summary: "List organizations (the token's own only)",
    },
    Route {
        pattern: "/api/v1/organizations/",
        method: Method::POST,
        handler: handler!(|ctx, _| orgs::create(ctx)),
        permission: On(Add, Resource::Organization),
        summary: "Create an organization (any organization's token with the permission; never a task token)",
    },
    Route {
        pattern: "/api/v1/organizations/{code}/",
        method: Method::GET,
        handler: handler!(|ctx, p| orgs::retrieve(ctx, p.get("code")?)),
        permission: On(View, Resource::Organization),
        summary: "Get the token's organization",
    },
    Route {
        pattern: "/api/v1/organizations/{code}/",
        method: Method::DELETE,
        handler: handler!(|ctx, p| orgs::destroy(ctx, p.get("code")?)),
        permission: On(Delete, Resource::Organization),
        summary: "Delete an organization: its tokens are refused, its data deleted",
    },
];

/// One segment of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Matched exactly (after percent-decoding and [`ALIASES`]).
    Literal(&'static str),
    /// `{name}`: any non-empty segment.
    Param(&'static str),
}

/// The segments of a pattern after [`PREFIX`].
pub(crate) fn segments(pattern: &'static str) -> Vec<Segment> {
    pattern
        .strip_prefix(PREFIX)
        .unwrap_or(pattern)
        .split('/')
        .filter(|s| !s.is_empty())
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => Segment::Param(name),
                None => Segment::Literal(s),
            },
        )
        .collect()
}

/// A pattern with the entries of [`ROUTES`] that share it.
#[derive(Debug)]
pub(crate) struct Pattern {
    /// As written in the table.
    pub(crate) text: &'static str,
    segments: Vec<Segment>,
    /// The entries, in table order.
    pub(crate) routes: Vec<&'static Route>,
    /// The `Allow` header's methods: the entries' methods, `HEAD` right after `GET`.
    pub(crate) allow: Vec<&'static str>,
}

/// [`ROUTES`] grouped by pattern, in table order.
pub(crate) static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    let mut out: Vec<Pattern> = Vec::new();
    for route in ROUTES {
        let i = match out.iter().position(|p| p.text == route.pattern) {
            Some(i) => i,
            None => {
                out.push(Pattern {
                    text: route.pattern,
                    segments: segments(route.pattern),
                    routes: Vec::new(),
                    allow: Vec::new(),
                });
                out.len() - 1
            }
        };
        let p = &mut out[i];
        p.routes.push(route);
        p.allow.push(route.method.as_str());
        if route.method == Method::GET {
            p.allow.push(Method::HEAD.as_str());
        }
    }
    out
});

/// The decoded path parameters of a request, by their names in the pattern.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Params {
    values: Vec<(&'static str, String)>,
    object_type: Option<ObjectType>,
}

impl Params {
    /// The parameter `name`; an internal error when the pattern has none (a table mistake, which
    /// the route-table tests catch).
    pub(crate) fn get(&self, name: &str) -> ApiResult<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                tracing::error!(
                    param = name,
                    "route table: the handler reads a path parameter its pattern lacks"
                );
                ApiError::internal()
            })
    }

    /// The `{type}` parameter, a known object type.
    pub(crate) fn object_type(&self) -> ApiResult<ObjectType> {
        self.object_type.ok_or_else(|| {
            tracing::error!("route table: the handler reads {{type}}, which its pattern lacks");
            ApiError::internal()
        })
    }

    /// The `{type}` parameter, if the pattern has one.
    pub(crate) fn path_type(&self) -> Option<ObjectType> {
        self.object_type
    }
}

/// A matched path: its pattern and decoded parameters.
#[derive(Debug)]
pub(crate) struct Matched {
    pub(crate) pattern: &'static Pattern,
    pub(crate) params: Params,
}

impl Matched {
    /// The entry for `method` (`HEAD` is `GET`'s), or a 405 with the pattern's `Allow`.
    pub(crate) fn route(&self, method: &Method) -> ApiResult<&'static Route> {
        let wanted = if *method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.pattern
            .routes
            .iter()
            .find(|r| r.method == *wanted)
            .copied()
            .ok_or_else(|| ApiError::method_not_allowed(method, &self.pattern.allow))
    }
}

fn not_found(path_hint: &str) -> ApiError {
    ApiError::not_found(format!("No route for {path_hint}."))
}

/// Match a raw (still percent-encoded) path against the table. Segments are split first and
/// decoded after, so a key may hold `/` as `%2F`. The trailing slash is optional.
pub(crate) fn match_path(raw_path: &str) -> ApiResult<Matched> {
    let Some(rest) = raw_path.strip_prefix(PREFIX) else {
        return Err(not_found("this path; the API lives under /api/v1/"));
    };
    if !rest.is_empty() && !rest.starts_with('/') {
        return Err(not_found("this path"));
    }
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let raw: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    if raw.iter().any(|s| s.is_empty()) {
        return Err(not_found("this path (empty segment)"));
    }
    let mut seg: Vec<String> = raw
        .iter()
        .map(|s| decode_segment(s))
        .collect::<ApiResult<_>>()?;
    if let Some(first) = seg.first_mut()
        && let Some((_, canonical)) = ALIASES.iter().find(|(alias, _)| *alias == first.as_str())
    {
        *first = (*canonical).to_string();
    }
    for pattern in PATTERNS.iter() {
        if pattern.segments.len() != seg.len()
            || !pattern.segments.iter().zip(&seg).all(|(p, s)| match p {
                Segment::Literal(l) => *l == s.as_str(),
                Segment::Param(_) => true,
            })
        {
            continue;
        }
        let mut params = Params::default();
        for (p, s) in pattern.segments.iter().zip(seg) {
            if let Segment::Param(name) = p {
                if *name == OBJECT_TYPE_PARAM {
                    params.object_type = Some(object_type(&s)?);
                }
                params.values.push((name, s));
            }
        }
        return Ok(Matched { pattern, params });
    }
    Err(not_found("this path"))
}

fn object_type(s: &str) -> ApiResult<ObjectType> {
    ObjectType::ALL
        .iter()
        .copied()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "unknown object type {s:?}; known types: {}",
                ObjectType::ALL.map(ObjectType::as_str).join(", ")
            ))
        })
}

#[cfg(test)]
mod tests;
