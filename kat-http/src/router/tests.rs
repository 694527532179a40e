//! The route table: matching, the table's own consistency, and a walk over every entry through
//! [`crate::Api::handle`] (each operation is reachable, every other method is a 405 with the
//! right `Allow`, and the served OpenAPI document lists exactly the table's operations).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use kat_core::memory::{MemoryFileStore, MemoryObjectStore, MemoryTaskStore};
use kat_core::object::ObjectType;
use kat_core::org::OrgCode;
use kat_core::permission::{Action, Resource, required_for};
use kat_core::plugin::{PluginDef, sync};
use kat_core::store::{ByteStream, FileStore, NewFile, OrgStore, PluginCatalog, TaskQueue};
use kat_core::task::{Task, TaskInput};

use super::*;
use crate::routes::schema;
use crate::{Api, ApiConfig, JwtAuthority, all_permissions, mint_operator_token};

/// The (pattern, method) pairs of the table, `HEAD` left out: what the OpenAPI document lists.
fn operations() -> BTreeSet<(&'static str, &'static str)> {
    ROUTES
        .iter()
        .map(|r| (r.pattern, r.method.as_str()))
        .collect()
}

fn matched(path: &str) -> (&'static str, Vec<(&'static str, String)>) {
    let m = match_path(path).unwrap();
    (m.pattern.text, m.params.values)
}

#[test]
fn matching() {
    assert_eq!(
        matched("/api/v1/objects/hostname/internet%7Ca.com/"),
        (
            "/api/v1/objects/{type}/{key}/",
            vec![
                ("type", "hostname".to_string()),
                ("key", "internet|a.com".to_string())
            ]
        )
    );
    assert_eq!(
        match_path("/api/v1/objects/hostname/internet%7Ca.com/")
            .unwrap()
            .params
            .object_type()
            .unwrap(),
        ObjectType::Hostname
    );
    assert_eq!(
        matched("/api/v1/objects/dnstxtrecord/internet|x.com||k%3Drsa%2Fp"),
        (
            "/api/v1/objects/{type}/{key}/",
            vec![
                ("type", "dnstxtrecord".to_string()),
                ("key", "internet|x.com||k=rsa/p".to_string())
            ]
        )
    );
    assert_eq!(
        matched("/api/v1/objects/hostname/internet|a.com/dnsrecord/"),
        (
            "/api/v1/objects/hostname/{key}/dnsrecord/",
            vec![("key", "internet|a.com".to_string())]
        )
    );
    assert_eq!(
        matched("/api/v1/files/3/download/"),
        ("/api/v1/file/{id}/download/", vec![("id", "3".to_string())])
    );
    assert_eq!(matched("/api/v1/objects/"), ("/api/v1/objects/", vec![]));
    for bad in [
        "/",
        "/api/v1",
        "/api/v1/nope/",
        "/api/v1/objects/frob/",
        "/api/v1//objects/",
        "/api/v10/objects/",
        "/api/v1/objects/hostname/a/b/c/d/",
    ] {
        assert_eq!(match_path(bad).unwrap_err().status, 404, "{bad}");
    }
    assert_eq!(
        match_path("/api/v1/objects/hostname/%FF/")
            .unwrap_err()
            .status,
        400
    );
}

#[test]
fn aliases_and_trailing_slashes() {
    for (path, pattern) in [
        ("/api/v1/file", "/api/v1/file/"),
        ("/api/v1/files/", "/api/v1/file/"),
        ("/api/v1/task/x/cancel", "/api/v1/tasks/{id}/cancel/"),
        (
            "/api/v1/organization/acme/",
            "/api/v1/organizations/{code}/",
        ),
        ("/api/v1/schema", "/api/v1/schema/"),
    ] {
        assert_eq!(matched(path).0, pattern, "{path}");
    }
    // Aliases are first segments only.
    assert_eq!(
        match_path("/api/v1/plugins/x/enables/").unwrap_err().status,
        404
    );
}

#[test]
fn the_table_is_well_formed() {
    let mut seen = BTreeSet::new();
    let mut finished: BTreeSet<&str> = BTreeSet::new();
    let mut previous: Option<&str> = None;
    for r in ROUTES {
        assert!(
            r.pattern.starts_with("/api/v1/") && r.pattern.ends_with('/'),
            "{}",
            r.pattern
        );
        assert_ne!(
            r.method,
            Method::HEAD,
            "{}: HEAD is answered by the GET entry",
            r.pattern
        );
        assert!(
            seen.insert((r.pattern, r.method.as_str())),
            "{} {} twice",
            r.method,
            r.pattern
        );
        assert!(
            !r.summary.is_empty(),
            "{} {} has no summary",
            r.method,
            r.pattern
        );
        if previous != Some(r.pattern) {
            if let Some(p) = previous {
                finished.insert(p);
            }
            assert!(
                !finished.contains(r.pattern),
                "the entries of {} are not together",
                r.pattern
            );
        }
        previous = Some(r.pattern);
        for s in segments(r.pattern) {
            if let Segment::Literal(l) = s {
                assert!(
                    !ALIASES.iter().any(|(alias, _)| *alias == l),
                    "{}: use the canonical spelling, not the alias {l:?}",
                    r.pattern
                );
            }
        }
    }
    // No path can match two patterns: two patterns of one length differ in a literal somewhere.
    for (i, a) in PATTERNS.iter().enumerate() {
        for b in &PATTERNS[i + 1..] {
            if a.segments.len() != b.segments.len() {
                continue;
            }
            let apart = a.segments.iter().zip(&b.segments).any(
                |(x, y)| matches!((x, y), (Segment::Literal(x), Segment::Literal(y)) if x != y),
            );
            assert!(apart, "{} and {} overlap", a.text, b.text);
        }
    }
}

#[test]
fn permissions_follow_the_methods_except_post_actions() {
    // `POST .../cancel/`, `/enable/`, `/disable/` and a rules run change their object; every other entry needs
    // what kat_core::permission::required_for gives for its method.
    let actions = [
        "/api/v1/tasks/{id}/cancel/",
        "/api/v1/plugins/{id}/enable/",
        "/api/v1/plugins/{id}/disable/",
        "/api/v1/business-rules/{id}/enable/",
        "/api/v1/business-rules/{id}/disable/",
        "/api/v1/business-rule-runs/",
    ];
    for r in ROUTES {
        let expected = |resource| {
            if r.pattern == "/api/v1/levels/recompute/" {
                // Recomputing changes (inherited) scan levels: the scan-level right.
                Some(PermissionName::SET_SCAN_LEVEL)
            } else if actions.contains(&r.pattern) {
                Some(PermissionName::new(Action::Change, resource))
            } else {
                required_for(r.method.as_str(), resource)
            }
        };
        match r.permission {
            Permission::Token => assert_eq!(r.pattern, "/api/v1/schema/"),
            Permission::On(action, resource) => assert_eq!(
                Some(PermissionName::new(action, resource)),
                expected(resource),
                "{} {}",
                r.method,
                r.pattern
            ),
            Permission::PathType(_) | Permission::BodyTypes(_) | Permission::RecordTypes(_) => {
                let ty = ObjectType::Hostname;
                assert_eq!(
                    r.permission.name(Some(ty)),
                    expected(Resource::Object(ty)),
                    "{} {}",
                    r.method,
                    r.pattern
                );
                assert_eq!(r.permission.name(None), None);
            }
        }
        if matches!(r.permission, Permission::PathType(_)) {
            assert!(
                segments(r.pattern).contains(&Segment::Param(OBJECT_TYPE_PARAM)),
                "{}: a path-type permission needs {{type}}",
                r.pattern
            );
        }
    }
}

#[test]
fn schema_data_names_table_entries() {
    let ops = operations();
    let mut keys = BTreeSet::new();
    for (method, pattern, _) in schema::DETAILS {
        assert!(
            ops.contains(&(*pattern, method.as_str())),
            "schema details for {method} {pattern}, which is not in ROUTES"
        );
        assert!(
            keys.insert((*pattern, method.as_str())),
            "{method} {pattern} twice"
        );
    }
    let patterns: BTreeSet<&str> = ROUTES.iter().map(|r| r.pattern).collect();
    let described: BTreeMap<&str, Vec<&str>> = schema::PATH_PARAMS
        .iter()
        .map(|(p, params)| (*p, params.iter().map(|(n, _, _)| *n).collect()))
        .collect();
    assert_eq!(
        described.len(),
        schema::PATH_PARAMS.len(),
        "a pattern described twice"
    );
    for p in &patterns {
        let names: Vec<&str> = segments(p)
            .into_iter()
            .filter_map(|s| match s {
                Segment::Param(n) => Some(n),
                Segment::Literal(_) => None,
            })
            .collect();
        let got = described.get(p).cloned().unwrap_or_default();
        assert_eq!(got, names, "path parameter descriptions of {p}");
    }
    for p in described.keys() {
        assert!(
            patterns.contains(p),
            "path parameters for {p}, which is not in ROUTES"
        );
    }
}

/// An API over memory stores, with one object, file, task, schedule, object set and plugin, and
/// an operator token holding every permission.
struct World {
    api: Api,
    token: String,
    file: String,
    task: String,
    schedule: String,
    set: String,
}

async fn world() -> World {
    let objects = Arc::new(MemoryObjectStore::default());
    let files = Arc::new(MemoryFileStore::default());
    let tasks = Arc::new(MemoryTaskStore::default());
    let auth = Arc::new(JwtAuthority::hs256(&[7u8; 32], tasks.clone()).unwrap());
    let org = OrgCode::new("acme").unwrap();
    tasks
        .put_organization(kat_core::org::Organization::new(org.clone(), "Acme"))
        .await
        .unwrap();
    let token = mint_operator_token(
        auth.as_ref(),
        "walker",
        org.clone(),
        all_permissions(),
        Duration::from_secs(600),
    )
    .unwrap();
    let defs = PluginDef::parse_file(
        r#"[{"plugin_id": "dns", "name": "DNS", "oci_image": "kat-plugins:latest"}]"#,
        "plugins.json",
    )
    .unwrap();
    tasks.put_plugins(sync(&[], &defs, true).0).await.unwrap();
    let task = Task::queued(org.clone(), "dns", TaskInput::default());
    let task_id = task.id.to_string();
    tasks.create_tasks(vec![task]).await.unwrap();
    let stream: ByteStream = Box::pin(futures::stream::iter([Ok(Bytes::from_static(b"hi"))]));
    let file = files
        .put(
            NewFile {
                org,
                file_type: "txt".into(),
                name: "a.txt".into(),
                task: None,
                scan_level: None,
                level_from: kat_core::store::LevelSource::Operator,
            },
            stream,
        )
        .await
        .unwrap();
    let api = Api::new(
        objects,
        files,
        tasks,
        auth,
        None,
        ApiConfig::new("http://kat.test"),
    );
    let mut w = World {
        api,
        token,
        file: file.id.to_string(),
        task: task_id,
        schedule: String::new(),
        set: String::new(),
    };
    let seeded = [
        (
            "/api/v1/objects/",
            json!({"hostname": [{"network": "internet", "name": "example.com"}]}),
        ),
        ("/api/v1/schedules/", json!({"plugin_id": "dns"})),
        (
            "/api/v1/object-sets/",
            json!({"name": "all hosts", "object_type": "hostname"}),
        ),
    ];
    let mut ids = Vec::new();
    for (path, body) in seeded {
        let (status, _, bytes) = w.call(Method::POST, path, Some(body)).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{path}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        // Task ids are strings, schedule and object set ids integers.
        ids.push(match &v["id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    }
    w.schedule = ids[1].clone();
    w.set = ids[2].clone();
    w
}

impl World {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "kat.test")
            .header(header::AUTHORIZATION, format!("Token {}", self.token));
        let bytes = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let r = self.api.handle(req.body(Full::new(bytes)).unwrap()).await;
        let (parts, body) = r.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, bytes)
    }

    /// A path that reaches `pattern` with parameters naming the seeded things.
    fn path(&self, pattern: &'static str) -> String {
        let collection = segments(pattern)
            .first()
            .map(|s| match s {
                Segment::Literal(l) => *l,
                Segment::Param(_) => "",
            })
            .unwrap_or_default();
        let id = match collection {
            "file" => self.file.as_str(),
            "tasks" => self.task.as_str(),
            "schedules" => self.schedule.as_str(),
            "object-sets" => self.set.as_str(),
            "plugins" => "dns",
            other => other,
        };
        pattern
            .replace("{type}", "hostname")
            .replace("{key}", "internet%7Cexample.com")
            .replace("{code}", "acme")
            .replace("{id}", id)
    }
}

const METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
];

#[tokio::test]
async fn every_entry_is_reachable_and_every_other_method_is_a_405() {
    for route in ROUTES {
        let mut methods = vec![route.method.clone()];
        if route.method == Method::GET {
            methods.push(Method::HEAD);
        }
        for method in methods {
            // A fresh world each time: a DELETE must not remove what a later request needs.
            let w = world().await;
            let path = w.path(route.pattern);
            let body = matches!(method, Method::POST | Method::PATCH).then(|| json!({}));
            let (status, _, bytes) = w.call(method.clone(), &path, body).await;
            assert!(
                ![
                    StatusCode::UNAUTHORIZED,
                    StatusCode::FORBIDDEN,
                    StatusCode::NOT_FOUND,
                    StatusCode::METHOD_NOT_ALLOWED,
                    StatusCode::INTERNAL_SERVER_ERROR,
                ]
                .contains(&status),
                "{method} {path} ({}): {status} {}",
                route.pattern,
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    let w = world().await;
    for pattern in PATTERNS.iter() {
        let mut allowed: BTreeSet<&str> =
            pattern.routes.iter().map(|r| r.method.as_str()).collect();
        if allowed.contains("GET") {
            allowed.insert("HEAD");
        }
        let path = w.path(pattern.text);
        for method in METHODS {
            if allowed.contains(method.as_str()) {
                continue;
            }
            let (status, headers, _) = w.call(method.clone(), &path, None).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            let allow: BTreeSet<&str> = headers[header::ALLOW]
                .to_str()
                .unwrap()
                .split(", ")
                .collect();
            assert_eq!(allow, allowed, "Allow of {method} {path}");
        }
    }
}

#[tokio::test]
async fn the_schema_lists_exactly_the_table() {
    let w = world().await;
    let (status, headers, bytes) = w.call(Method::GET, "/api/v1/schema/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/vnd.oai.openapi+json"
    );
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc, schema::document());
    let mut listed = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()));
            listed.insert((path.clone(), method.to_ascii_uppercase()));
        }
    }
    let table: BTreeSet<(String, String)> = operations()
        .into_iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect();
    assert_eq!(listed, table);
    // Each operation's summary is its entry's.
    for r in ROUTES {
        let m = r.method.as_str().to_ascii_lowercase();
        assert_eq!(doc["paths"][r.pattern][m.as_str()]["summary"], r.summary);
    }
}

/// Whether `value` fits a parameter's schema as the document states it (the kinds it uses).
fn fits(schema: &Value, value: &str) -> bool {
    if let Some(options) = schema["oneOf"].as_array() {
        return options.iter().any(|o| fits(o, value));
    }
    if let Some(names) = schema["enum"].as_array() {
        return names.iter().any(|n| n == value);
    }
    match schema["type"].as_str() {
        Some("integer") => value.parse::<u64>().is_ok_and(|n| {
            n >= schema["minimum"].as_u64().unwrap_or(0)
                && schema["maximum"].as_u64().is_none_or(|max| n <= max)
        }),
        Some("boolean") => value == "true" || value == "false",
        Some("string") if schema["format"] == "uuid" => uuid::Uuid::parse_str(value).is_ok(),
        Some("string") if schema["pattern"] == "^[^|]+[|][^|]+$" => {
            let parts: Vec<&str> = value.split('|').collect();
            parts.len() == 2 && parts.iter().all(|p| !p.is_empty())
        }
        Some("string") => {
            assert!(
                schema.get("format").is_none() && schema.get("pattern").is_none(),
                "a schema this test does not know: {schema}"
            );
            true
        }
        _ => panic!("a schema this test does not know: {schema}"),
    }
}

/// A value outside a parameter's schema (a plain string has none).
fn outside(schema: &Value) -> Option<&'static str> {
    if schema["oneOf"].is_array() || schema["format"] == "uuid" || schema.get("pattern").is_some() {
        return Some("0");
    }
    if schema["enum"].is_array() {
        return Some("nosuchtype");
    }
    match schema["type"].as_str() {
        Some("integer") if schema["minimum"].as_u64().unwrap_or(0) > 0 => Some("0"),
        Some("integer") => Some("x"),
        Some("boolean") => Some("yes"),
        _ => None,
    }
}

/// The parameter kinds the served document states are what the API checks: the walk's real path
/// values fit them, a value outside one is a 400 naming the value (path; a 404 for an unknown object
/// type) or the parameter (query), and a value inside one is accepted.
#[tokio::test]
async fn the_documents_parameter_schemas_are_what_the_api_checks() {
    let w = world().await;
    let doc = schema::document();
    let mut checked = 0;
    for r in ROUTES {
        let item = &doc["paths"][r.pattern];
        let op = &item[r.method.as_str().to_ascii_lowercase().as_str()];
        let real = w.path(r.pattern);
        for p in item["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap();
            let schema = &p["schema"];
            let placeholder = format!("{{{name}}}");
            // The value the walk puts there (URL-decoded), found by lining the path up with the pattern.
            let at = r.pattern.split('/').position(|s| s == placeholder).unwrap();
            let value = real.split('/').nth(at).unwrap().replace("%7C", "|");
            assert!(
                fits(schema, &value),
                "{} {}: {value:?} does not fit {name}'s {schema}",
                r.method,
                r.pattern
            );
            let Some(bad) = outside(schema) else { continue };
            let mut segments: Vec<&str> = real.split('/').collect();
            segments[at] = bad;
            let path = segments.join("/");
            let (status, _, bytes) = w.call(r.method.clone(), &path, None).await;
            let body = String::from_utf8_lossy(&bytes);
            // An unknown object type names no collection: a 404, as any unknown path.
            let refused = if schema["enum"].is_array() {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            assert_eq!(status, refused, "{} {path}: {body}", r.method);
            assert!(
                body.contains(&format!("\\\"{bad}\\\"")),
                "{} {path}: {body}",
                r.method
            );
            checked += 1;
        }
        if r.method != Method::GET {
            continue;
        }
        for p in op["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap();
            let schema = &p["schema"];
            let Some(bad) = outside(schema) else { continue };
            let (status, _, bytes) = w
                .call(Method::GET, &format!("{real}?{name}={bad}"), None)
                .await;
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "GET {real}?{name}={bad}: {v}"
            );
            assert_eq!(v["errors"][0]["attr"], name, "GET {real}?{name}={bad}: {v}");
            let good = match (schema["type"].as_str(), &schema["enum"]) {
                (_, Value::Array(names)) => names[0].as_str().unwrap().to_string(),
                (Some("integer"), _) => schema["minimum"].as_u64().unwrap_or(0).to_string(),
                (Some("boolean"), _) => "true".to_string(),
                _ => w.task.clone(),
            };
            assert!(fits(schema, &good));
            let (status, _, bytes) = w
                .call(Method::GET, &format!("{real}?{name}={good}"), None)
                .await;
            // Accepted: listed, or (business rules, with no engine in this world) a documented 503.
            let documented = op["responses"].get(status.as_str()).is_some();
            assert!(
                status == StatusCode::OK
                    || (status == StatusCode::SERVICE_UNAVAILABLE && documented),
                "GET {real}?{name}={good}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} parameters checked");
    // Two answers the document once left out: a file sent as JSON, and a recompute's count.
    for (method, path, body) in [
        (Method::POST, "/api/v1/file/", Some(json!({"file": "hi"}))),
        (Method::POST, "/api/v1/levels/recompute/", None),
    ] {
        let (status, _, bytes) = w.call(method.clone(), path, body).await;
        let op = &doc["paths"][path][method.as_str().to_ascii_lowercase().as_str()];
        assert!(
            op["responses"].get(status.as_str()).is_some(),
            "{method} {path} answered {status}, which the document does not list: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}
