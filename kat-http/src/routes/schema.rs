//! `/schema/`: the OpenAPI 3 document, built once from the route table.
//!
//! The paths, methods, summaries and permissions come from [`ROUTES`]; what the table does not
//! hold (path parameter descriptions, query parameters, request bodies, responses) is data here,
//! keyed by the table's patterns and (method, pattern) pairs, with defaults for what most
//! operations share. The route-table tests check that every key names an entry of the table.

use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, header};
use serde_json::{Map, Value, json};

use super::Ctx;
use crate::body::{self, ApiBody};
use crate::error::ApiResult;
use crate::router::{self, Permission, ROUTES, Route, Segment};

/// `GET /schema/`: the document (any valid token).
pub(crate) async fn get(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let mut r = Response::new(body::full(DOCUMENT.clone()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.oai.openapi+json"),
    );
    Ok(r)
}

/// The serialized document.
static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| {
    serde_json::to_vec_pretty(&document())
        .map(Bytes::from)
        .unwrap_or_default()
});

/// What values a parameter takes, as the API checks them (a value outside it is a 400 naming the
/// parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Any text.
    Text,
    /// A whole number of at least this much.
    AtLeast(u64),
    /// `true` or `false`.
    Flag,
    /// A scan level, 0 to 4.
    Level,
    /// A UUID.
    Uuid,
    /// A positive integer (the `id` the API shows) or a UUID (the `uuid` it shows).
    IdOrUuid,
    /// A natural key with two `|`-separated parts (`network|name`).
    TwoPartKey,
    /// An object type's name (`hostname`).
    ObjectType,
}

impl Kind {
    /// The parameter's OpenAPI schema.
    pub(crate) fn schema(self) -> Value {
        match self {
            Kind::Text => json!({"type": "string"}),
            Kind::AtLeast(min) => json!({"type": "integer", "format": "int64", "minimum": min}),
            Kind::Flag => json!({"type": "boolean"}),
            Kind::Level => json!({"type": "integer", "minimum": 0, "maximum": 4}),
            Kind::Uuid => json!({"type": "string", "format": "uuid"}),
            Kind::IdOrUuid => json!({"oneOf": [
                {"type": "integer", "format": "int64", "minimum": 1},
                {"type": "string", "format": "uuid"},
            ]}),
            Kind::TwoPartKey => json!({"type": "string", "pattern": "^[^|]+[|][^|]+$"}),
            Kind::ObjectType => json!({
                "type": "string",
                "enum": kat_core::object::ObjectType::ALL.map(kat_core::object::ObjectType::as_str),
            }),
        }
    }
}

/// One query parameter of an operation.
#[derive(Debug)]
struct QueryParam {
    name: &'static str,
    description: &'static str,
    /// Takes repeated values (`?id=a&id=b`).
    repeated: bool,
    kind: Kind,
}

const fn single(name: &'static str, description: &'static str) -> QueryParam {
    typed(name, description, Kind::Text)
}

const fn typed(name: &'static str, description: &'static str, kind: Kind) -> QueryParam {
    QueryParam {
        name,
        description,
        repeated: false,
        kind,
    }
}

const fn repeated(name: &'static str, description: &'static str) -> QueryParam {
    QueryParam {
        name,
        description,
        repeated: true,
        kind: Kind::Text,
    }
}

/// A request body.
#[derive(Debug)]
enum RequestBody {
    None,
    /// JSON, described by an example or a sentence.
    Json(&'static str),
    /// A JSON object, described by a sentence, and the fields it must have.
    Fields(&'static str, &'static [&'static str]),
    /// A file upload: part `file`, optional field `type`.
    Multipart,
}

/// What the document says about an operation beyond its table entry.
#[derive(Debug)]
pub(crate) struct Details {
    /// Appended to the permission in the operation's description.
    permission_note: &'static str,
    /// Query parameters.
    query: &'static [QueryParam],
    body: RequestBody,
    /// Status, description and response schema (a component name) on success; `None`: 200 `OK` for
    /// GET and PATCH, 201 `Created` for POST, 204 `Deleted` for DELETE.
    success: Option<(u16, &'static str, Option<&'static str>)>,
    /// Error statuses (each with the `Error` schema).
    errors: &'static [u16],
}

impl Details {
    const DEFAULT: Details = Details {
        permission_note: "",
        query: &[],
        body: RequestBody::None,
        success: None,
        errors: &[400, 401, 403, 404],
    };
}

const LIMIT_CAPPED: QueryParam =
    typed("limit", "Page size (default 100, capped)", Kind::AtLeast(1));
const OFFSET_ITEMS: QueryParam = typed("offset", "Items to skip", Kind::AtLeast(0));
const SEARCH: QueryParam = single("search", "Case-insensitive substring");
const ORDERING: QueryParam = single("ordering", "Field, '-field' for descending");
const LIMIT: QueryParam = typed("limit", "Page size", Kind::AtLeast(1));
const OFFSET: QueryParam = typed("offset", "Skip", Kind::AtLeast(0));
const WITH_BODY_ERRORS: &[u16] = &[400, 401, 403, 404, 413];
const WITH_ENGINE_ERRORS: &[u16] = &[400, 401, 403, 404, 503];
const PAGE: Option<(u16, &str, Option<&str>)> = Some((200, "OK", Some("Page")));
const DELETED_COUNT: Option<(u16, &str, Option<&str>)> = Some((200, "{\"deleted\": n}", None));
const OK: Option<(u16, &str, Option<&str>)> = Some((200, "OK", None));

/// [`Details`] by (method, pattern) of the table; operations not listed take [`Details::DEFAULT`].
pub(crate) static DETAILS: &[(Method, &str, Details)] = &[
    (
        Method::GET,
        "/api/v1/schema/",
        Details {
            success: Some((200, "OpenAPI 3 JSON", None)),
            errors: &[401],
            ..Details::DEFAULT
        },
    ),
    (
        Method::POST,
        "/api/v1/objects/",
        Details {
            permission_note: " for every key; an object with a scan level also needs objects.can_set_scan_level",
            body: RequestBody::Json(
                "{\"hostname\": [{\"network\": \"internet\", \"name\": \"example.com\"}]}",
            ),
            errors: WITH_BODY_ERRORS,
            ..Details::DEFAULT
        },
    ),
    (
        Method::GET,
        "/api/v1/objects/{type}/",
        Details {
            query: &[
                LIMIT_CAPPED,
                OFFSET_ITEMS,
                SEARCH,
                ORDERING,
                repeated("id", "Natural keys"),
                repeated("<field>", "Any field of the type (repeatable)"),
            ],
            success: PAGE,
            ..Details::DEFAULT
        },
    ),
    (
        Method::POST,
        "/api/v1/objects/{type}/",
        Details {
            permission_note: " (pks: each key); an object with a scan level also needs objects.can_set_scan_level",
            body: RequestBody::Json("An object or a list of objects"),
            errors: WITH_BODY_ERRORS,
            ..Details::DEFAULT
        },
    ),
    (
        Method::DELETE,
        "/api/v1/objects/{type}/",
        Details {
            permission_note: " (pks: each key)",
            query: &[repeated("id", "Natural keys to delete (required)")],
            success: DELETED_COUNT,
            ..Details::DEFAULT
        },
    ),
    (
        Method::PATCH,
        "/api/v1/objects/{type}/{key}/",
        Details {
            permission_note: "; scan_level or declared also needs objects.can_set_scan_level (pks: the key)",
            body: RequestBody::Json("{\"scan_level\": 2}"),
            ..Details::DEFAULT
        },
    ),
    (
        Method::DELETE,
        "/api/v1/objects/hostname/{key}/dnsrecord/",
        Details {
            permission_note: " for each record deleted",
            query: &[repeated(
                "record_id",
                "Record keys (repeatable, or comma lists); required",
            )],
            success: DELETED_COUNT,
            ..Details::DEFAULT
        },
    ),
    (
        Method::GET,
        "/api/v1/file/",
        Details {
            query: &[
                LIMIT_CAPPED,
                OFFSET_ITEMS,
                SEARCH,
                ORDERING,
                single("type", "File type"),
                typed("task_id", "Producing task", Kind::Uuid),
                repeated("id", "File ids"),
            ],
            success: PAGE,
            ..Details::DEFAULT
        },
    ),
    (
        Method::POST,
        "/api/v1/file/",
        Details {
            query: &[typed(
                "scan_level",
                "The scan level (0 to 4) the file carries; required without a task, refused with one",
                Kind::Level,
            )],
            body: RequestBody::Multipart,
            success: Some((201, "Created", Some("File"))),
            errors: &[400, 401, 403, 404, 413, 415],
            ..Details::DEFAULT
        },
    ),
    (
        Method::GET,
        "/api/v1/file/{id}/",
        Details {
            permission_note: " (pks: file ids)",
            success: Some((200, "OK", Some("File"))),
            ..Details::DEFAULT
        },
    ),
    (
        Method::GET,
        "/api/v1/file/{id}/download/",
        Details {
            permission_note: " (pks: file ids)",
            ..Details::DEFAULT
        },
    ),
    (
        Method::GET,
        "/api/v1/tasks/",
        Details {
            query: &[
                LIMIT,
                OFFSET,
                repeated(
                    "state",
                    "queued, running, completed, failed, cancelled, timed_out",
                ),
                single("plugin_id", "Plugin"),
            ],
            success: PAGE,
            ..Details::DEFAULT
        },
    ),
    (
        Method::POST,
        "/api/v1/tasks/",
        Details {
            permission_note: ", and every permission each plugin declares (scopes included)",
            body: RequestBody::Json("A task request or a list"),
            errors: WITH_ENGINE_ERRORS,
            ..Details::DEFAULT
        },
    ),
    (
        Method::POST,
        "/api/v1/tasks/{id}/cancel/",
        Details {
            success: OK,
            errors: WITH_ENGINE_ERRORS,
            ..Details::DEFAULT
        },
    ),
    (
        Method::GET,
        "/api/v1/schedules/",
        Details {
            query: &[
                LIMIT,
                OFFSET,
                single("plugin_id", "Plugin"),
                typed("enabled", "true or false", Kind::Flag),
            ],
            success: PAGE,
            ..Details::DEFAULT
        },
    ),
    (
        Method::POST,
        "/api/v1/schedules/",
        Details {
            permission_note: ", and every permission the plugin declares (scopes included)",
            body: RequestBody::Fields("A schedule", &["plugin_id"]),
            ..Details::DEFAULT
        },
    ),
    (
        Method::PATCH,
        "/api/v1/schedules/{id}/",
        Details {
            permission_note: "; changing plugin_id or enabling it also needs every permission the plugin declares",
            body: RequestBody::Json("Fields to change"),
            ..Details::DEFAULT
        },
    ),
    (
        Method::GET,
        "/api/v1/object-sets/",
        Details {
            query: &[
                LIMIT,
                OFFSET,
                typed("object_type", "Object type", Kind::ObjectType),
            ],
            success: PAGE,
            ..Details::DEFAULT
        },
    ),
    (
        Method::POST,
        "/api/v1/object-sets/",
        Details {
            body: RequestBody::Fields("An object set", &["name", "object_type"]),
            ..Details::DEFAULT
        },
    ),
    (
        Method::PATCH,
        "/api/v1/object-sets/{id}/",
        Details {
            body: RequestBody::Json("Fields to change"),
            ..Details::DEFAULT
        },
    ),
    (
        Method::GET,
        "/api/v1/plugins/",
        Details {
            query: &[
                LIMIT,
                OFFSET,
                single("search", "Substring of id or name"),
                typed("enabled", "true or false", Kind::Flag),
            ],
            success: PAGE,
            ..Details::DEFAULT
        },
    ),
    (
        Method::POST,
        "/api/v1/plugins/{id}/enable/",
        Details {
            success: OK,
            ..Details::DEFAULT
        },
    ),
    (
        Method::POST,
        "/api/v1/plugins/{id}/disable/",
        Details {
            success: OK,
            ..Details::DEFAULT
        },
    ),
    (
        Method::GET,
        "/api/v1/business-rules/",
        Details {
            query: &[
                LIMIT,
                OFFSET,
                single("search", "Substring of name or description"),
                typed(
                    "enabled",
                    "true or false (for the caller's organization)",
                    Kind::Flag,
                ),
            ],
            success: PAGE,
            errors: &[400, 401, 403, 503],
            ..Details::DEFAULT
        },
    ),
    (
        Method::POST,
        "/api/v1/levels/recompute/",
        Details {
            success: Some((200, "{\"changed\": n}", None)),
            ..Details::DEFAULT
        },
    ),
    (
        Method::POST,
        "/api/v1/business-rule-runs/",
        Details {
            success: OK,
            errors: &[400, 401, 403, 503],
            ..Details::DEFAULT
        },
    ),
    (
        Method::POST,
        "/api/v1/business-rules/{id}/enable/",
        Details {
            success: OK,
            errors: &[400, 401, 403, 404, 503],
            ..Details::DEFAULT
        },
    ),
    (
        Method::POST,
        "/api/v1/business-rules/{id}/disable/",
        Details {
            success: OK,
            errors: &[400, 401, 403, 404, 503],
            ..Details::DEFAULT
        },
    ),
    (
        Method::GET,
        "/api/v1/organizations/",
        Details {
            query: &[LIMIT, OFFSET],
            success: PAGE,
            ..Details::DEFAULT
        },
    ),
    (
        Method::POST,
        "/api/v1/organizations/",
        Details {
            permission_note: " (never a task token)",
            body: RequestBody::Fields(
                "An organization: code (a-z 0-9 - _, up to 32) and name",
                &["code"],
            ),
            errors: &[400, 401, 403, 409],
            ..Details::DEFAULT
        },
    ),
    (
        Method::DELETE,
        "/api/v1/organizations/{code}/",
        Details {
            permission_note: " (never a task token); deletes the organization's data",
            ..Details::DEFAULT
        },
    ),
];

/// A path parameter: its name, description and kind.
pub(crate) type PathParam = (&'static str, &'static str, Kind);

/// The description and kind of each pattern's path parameters, by pattern of the table.
pub(crate) static PATH_PARAMS: &[(&str, &[PathParam])] = &[
    (
        "/api/v1/objects/{type}/",
        &[("type", "Object type", Kind::ObjectType)],
    ),
    (
        "/api/v1/objects/{type}/{key}/",
        &[
            ("type", "Object type", Kind::ObjectType),
            ("key", "Natural key, URL-encoded ('/' as %2F)", Kind::Text),
        ],
    ),
    (
        "/api/v1/objects/hostname/{key}/dnsrecord/",
        &[("key", "The hostname's natural key", Kind::TwoPartKey)],
    ),
    ("/api/v1/file/{id}/", &[("id", "File id", Kind::AtLeast(0))]),
    (
        "/api/v1/file/{id}/download/",
        &[("id", "File id", Kind::AtLeast(0))],
    ),
    ("/api/v1/tasks/{id}/", &[("id", "Task id", Kind::Uuid)]),
    (
        "/api/v1/tasks/{id}/cancel/",
        &[("id", "Task id", Kind::Uuid)],
    ),
    (
        "/api/v1/schedules/{id}/",
        &[("id", "Schedule id: an integer, or its UUID", Kind::IdOrUuid)],
    ),
    (
        "/api/v1/object-sets/{id}/",
        &[(
            "id",
            "Object set id: an integer, or its UUID",
            Kind::IdOrUuid,
        )],
    ),
    ("/api/v1/plugins/{id}/", &[("id", "Plugin id", Kind::Text)]),
    (
        "/api/v1/plugins/{id}/enable/",
        &[("id", "Plugin id", Kind::Text)],
    ),
    (
        "/api/v1/plugins/{id}/disable/",
        &[("id", "Plugin id", Kind::Text)],
    ),
    (
        "/api/v1/business-rules/{id}/",
        &[("id", "Rule name", Kind::Text)],
    ),
    (
        "/api/v1/business-rules/{id}/enable/",
        &[("id", "Rule name", Kind::Text)],
    ),
    (
        "/api/v1/business-rules/{id}/disable/",
        &[("id", "Rule name", Kind::Text)],
    ),
    (
        "/api/v1/organizations/{code}/",
        &[("code", "Organization code", Kind::Text)],
    ),
];

/// The details of `route`.
fn details(route: &Route) -> &'static Details {
    DETAILS
        .iter()
        .find(|(m, p, _)| *m == route.method && *p == route.pattern)
        .map_or(&Details::DEFAULT, |(_, _, d)| d)
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Bad input (validation_error or client_error; attr names the field)",
        401 => "Missing or invalid token",
        403 => "Missing permission",
        404 => "Not found",
        409 => "Conflict (it exists, or its state forbids the change)",
        413 => "Body too large",
        415 => "Not multipart/form-data",
        503 => "No task engine",
        _ => "Error",
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}})
}

/// How the document states a permission rule.
fn permission_text(permission: Permission, note: &str) -> String {
    let objects = |action: kat_core::permission::Action, model: &str| {
        format!("objects.{}_{model}", action.as_str())
    };
    let name = match permission {
        Permission::Token => return "Any valid token.".to_string(),
        Permission::On(action, resource) => {
            kat_core::permission::PermissionName::new(action, resource).to_string()
        }
        Permission::PathType(action) | Permission::BodyTypes(action) => objects(action, "<type>"),
        Permission::RecordTypes(action) => objects(action, "<record type>"),
    };
    format!("Permission: `{name}{note}`.")
}

fn operation(route: &Route) -> Value {
    let d = details(route);
    let mut responses = Map::new();
    for status in d.errors {
        responses.insert(
            status.to_string(),
            json!({"description": error_description(*status), "content": schema_ref("Error")}),
        );
    }
    let (status, description, schema) = d.success.unwrap_or(match route.method {
        Method::POST => (201, "Created", None),
        Method::DELETE => (204, "Deleted", None),
        _ => (200, "OK", None),
    });
    let mut success = json!({"description": description});
    if let Some(name) = schema {
        success["content"] = schema_ref(name);
    }
    responses.insert(status.to_string(), success);
    let mut op = json!({
        "summary": route.summary,
        "description": permission_text(route.permission, d.permission_note),
        "responses": responses,
    });
    if !d.query.is_empty() {
        let params: Vec<Value> = d
            .query
            .iter()
            .map(|q| {
                let mut v = json!({
                    "name": q.name,
                    "in": "query",
                    "required": false,
                    "description": q.description,
                    "schema": q.kind.schema(),
                });
                if q.repeated {
                    v["schema"] = json!({"type": "array", "items": {"type": "string"}});
                    v["style"] = json!("form");
                    v["explode"] = json!(true);
                }
                v
            })
            .collect();
        op["parameters"] = Value::Array(params);
    }
    match d.body {
        RequestBody::None => {}
        RequestBody::Json(description) => op["requestBody"] = json_body(description, &[]),
        RequestBody::Fields(description, required) => {
            op["requestBody"] = json_body(description, required);
        }
        RequestBody::Multipart => {
            op["requestBody"] = json!({
                "required": true,
                "content": {"multipart/form-data": {"schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "type": {"type": "string"},
                    },
                    "required": ["file"],
                }}},
            });
        }
    }
    op
}

/// A JSON object request body with these required fields (none: the key is left out, as OpenAPI 3.0
/// wants a non-empty list there).
fn json_body(description: &str, required: &[&str]) -> Value {
    let mut schema = json!({"type": "object"});
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    json!({
        "required": true,
        "content": {"application/json": {"schema": schema}},
        "description": description,
    })
}

fn path_parameters(pattern: &'static str) -> Vec<Value> {
    let described = PATH_PARAMS
        .iter()
        .find(|(p, _)| *p == pattern)
        .map_or(&[][..], |(_, params)| *params);
    router::segments(pattern)
        .into_iter()
        .filter_map(|s| match s {
            Segment::Param(name) => Some(name),
            Segment::Literal(_) => None,
        })
        .map(|name| {
            let (description, kind) = described
                .iter()
                .find(|(n, _, _)| *n == name)
                .map_or(("", Kind::Text), |(_, d, k)| (*d, *k));
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": description,
                "schema": kind.schema(),
            })
        })
        .collect()
}

/// The OpenAPI document: one path per pattern of [`ROUTES`], one operation per entry.
pub(crate) fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths.entry(route.pattern).or_insert_with(|| {
            let params = path_parameters(route.pattern);
            if params.is_empty() {
                json!({})
            } else {
                json!({"parameters": params})
            }
        });
        item[route.method.as_str().to_ascii_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "kat-rs API",
            "version": "1",
            "description": "The API that plugin containers call with short-lived, task-scoped JWTs (Authorization: Token <jwt> or Bearer <jwt>). Paths under /files/ are aliases of /file/. A trailing slash is optional. Unknown query parameters are a 400.",
        },
        "security": [{"token": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "'Token <jwt>' is accepted too",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["type", "errors"],
                    "properties": {
                        "type": {"type": "string", "enum": ["client_error", "validation_error", "server_error"]},
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "code": {"type": "string"},
                                    "detail": {"type": "string"},
                                    "attr": {"type": "string", "nullable": true},
                                },
                            },
                        },
                    },
                },
                "Page": {
                    "type": "object",
                    "required": ["count", "next", "previous", "results"],
                    "properties": {
                        "count": {"type": "integer"},
                        "next": {"type": "string", "nullable": true, "format": "uri"},
                        "previous": {"type": "string", "nullable": true, "format": "uri"},
                        "results": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "File": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "file": {"type": "string", "format": "uri"},
                        "type": {"type": "string"},
                        "name": {"type": "string"},
                        "size": {"type": "integer"},
                        "sha256": {"type": "string"},
                        "task_id": {"type": "string", "nullable": true},
                        "scan_level": {"type": "integer", "minimum": 0, "maximum": 4, "nullable": true},
                        "scan_level_from": {"type": "string", "enum": ["unrecorded", "objects", "files", "no_inputs", "operator", "engine"]},
                        "organization": {"type": "string"},
                        "created_at": {"type": "string", "format": "date-time"},
                    },
                },
            },
        },
    })
}
