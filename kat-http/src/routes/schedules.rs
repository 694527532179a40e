//! `/schedules/` and `/object-sets/`: CRUD, scoped to the caller's organization.

use std::collections::BTreeSet;

use http::Response;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use kat_core::clock::Timestamp;
use kat_core::object::{NaturalKey, ObjectType};
use kat_core::schedule::{Interval, ObjectSet, ObjectSetId, Schedule, ScheduleId};

use super::{Ctx, created, object_body, ok, only_fields, page_of};
use crate::auth::ListScope;
use crate::body::{self, ApiBody};
use crate::error::{ApiError, ApiResult};

/// How a request names a schedule or an object set: its integer id (what the API shows as `id`, as
/// in the original), or its UUID (shown as `uuid`; what `id` was before ids were integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdRef {
    Number(u64),
    Uuid(Uuid),
}

impl IdRef {
    /// From a path segment or a string field: digits are an integer id, else a UUID. `what` names
    /// the thing with its article ("a schedule").
    fn parse(raw: &str, what: &str, attr: &str) -> ApiResult<IdRef> {
        let bad = || {
            ApiError::invalid(
                attr,
                format!("not {what} id (a positive integer such as 123, or a UUID): {raw:?}"),
            )
        };
        if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
            return match raw.parse::<u64>() {
                Ok(n) if n > 0 => Ok(IdRef::Number(n)),
                _ => Err(bad()),
            };
        }
        Uuid::parse_str(raw).map(IdRef::Uuid).map_err(|_| bad())
    }

    /// From a JSON field: a positive integer, or a string as in [`IdRef::parse`].
    fn from_json(v: &Value, what: &str, attr: &str) -> ApiResult<IdRef> {
        match v {
            Value::Number(n) => match n.as_u64() {
                Some(n) if n > 0 => Ok(IdRef::Number(n)),
                _ => Err(ApiError::invalid(
                    attr,
                    format!("not {what} id (a positive integer, or a UUID string): {n}"),
                )),
            },
            Value::String(raw) => IdRef::parse(raw, what, attr),
            _ => Err(ApiError::invalid(
                attr,
                format!("{attr} must be an integer, a UUID string or null"),
            )),
        }
    }
}

/// Whether a `pks` scope admits a record known by its integer id `number` or its `uuid`.
fn pk_allows(ctx: &Ctx<'_>, number: u64, uuid: &str) -> ApiResult<()> {
    ctx.require_pk(&number.to_string())
        .or_else(|_| ctx.require_pk(uuid))
}

fn scoped<T>(items: Vec<T>, scope: &ListScope, ids: impl Fn(&T) -> [String; 2]) -> Vec<T> {
    match scope {
        ListScope::All => items,
        ListScope::Only(pks) => items
            .into_iter()
            .filter(|t| ids(t).iter().any(|id| pks.contains(id)))
            .collect(),
    }
}

/// The caller's organization's object set named by `r`, if any.
async fn find_set(ctx: &Ctx<'_>, r: IdRef) -> ApiResult<Option<ObjectSet>> {
    let org = ctx.caller.org();
    Ok(match r {
        IdRef::Uuid(u) => ctx
            .inner
            .tasks
            .get_object_set(ObjectSetId(u))
            .await?
            .filter(|s| s.org == *org),
        IdRef::Number(n) => ctx
            .inner
            .tasks
            .list_object_sets(Some(org))
            .await?
            .into_iter()
            .find(|s| s.org == *org && s.number == n),
    })
}

/// The integer ids of the caller's organization's object sets, by UUID (for schedule JSON).
async fn set_numbers(ctx: &Ctx<'_>) -> ApiResult<std::collections::BTreeMap<ObjectSetId, u64>> {
    Ok(ctx
        .inner
        .tasks
        .list_object_sets(Some(ctx.caller.org()))
        .await?
        .into_iter()
        .map(|s| (s.id, s.number))
        .collect())
}

// ---------------------------------------------------------------- schedules

fn schedule_json(s: &Schedule, sets: &std::collections::BTreeMap<ObjectSetId, u64>) -> Value {
    json!({
        "id": s.number,
        "uuid": s.id.to_string(),
        "organization": s.org.as_ref().map(|o| o.as_str()),
        "plugin_id": s.plugin_id,
        "object_set_id": s.object_set.map(|o| sets.get(&o).copied()),
        "interval": s.interval.to_string(),
        "enabled": s.enabled,
        "next_run_at": s.next_run_at.to_string(),
        "last_run_at": s.last_run_at.map(|t| t.to_string()),
        "created_at": s.created_at.to_string(),
        "owner": s.owner.as_ref().map(|o| o.subject.as_str()),
        "owner_token_expires_at": s.owner.as_ref().and_then(|o| o.token.as_ref()).map(|t| t.expires_at.to_string()),
        "disabled_reason": s.disabled_reason,
    })
}

/// Make the caller the schedule's owner: they must hold every permission its plugin declares
/// (403 naming what is missing); the schedule then runs with their token's rights and stops when
/// that token is revoked or expires.
async fn take_over(ctx: &Ctx<'_>, s: &mut Schedule) -> ApiResult<()> {
    let submitter = ctx.caller.submitter();
    if let Some(rec) = ctx.inner.tasks.get_plugin(&s.plugin_id).await? {
        submitter.may_run(&rec.def)?;
    }
    s.owner = Some(submitter);
    s.disabled_reason = None;
    Ok(())
}

const SCHEDULE_FIELDS: [&str; 4] = ["plugin_id", "object_set_id", "interval", "enabled"];

/// Apply the fields of a schedule body to `s`, validating each against the stores.
async fn apply_schedule(ctx: &Ctx<'_>, m: &Map<String, Value>, s: &mut Schedule) -> ApiResult<()> {
    only_fields(m, &SCHEDULE_FIELDS)?;
    if let Some(v) = m.get("plugin_id") {
        let Value::String(id) = v else {
            return Err(ApiError::invalid("plugin_id", "plugin_id must be a string"));
        };
        let Some(rec) = ctx.inner.tasks.get_plugin(id).await? else {
            return Err(ApiError::invalid(
                "plugin_id",
                format!("unknown plugin {id:?}"),
            ));
        };
        s.plugin_id = id.clone();
        if !m.contains_key("interval")
            && let Some(r) = rec.def.recurrences
        {
            s.interval = r;
        }
    }
    if let Some(v) = m.get("object_set_id") {
        s.object_set = match v {
            Value::Null => None,
            v => {
                let r = IdRef::from_json(v, "an object set", "object_set_id")?;
                match find_set(ctx, r).await? {
                    Some(set) => Some(set.id),
                    None => {
                        return Err(ApiError::invalid(
                            "object_set_id",
                            format!("no object set {v} in this organization"),
                        ));
                    }
                }
            }
        };
    }
    if let Some(v) = m.get("interval") {
        let Value::String(raw) = v else {
            return Err(ApiError::invalid(
                "interval",
                "interval must be an ISO 8601 duration such as PT24H",
            ));
        };
        s.interval = raw.parse::<Interval>().map_err(ApiError::from)?;
    }
    if let Some(v) = m.get("enabled") {
        let Value::Bool(b) = v else {
            return Err(ApiError::invalid(
                "enabled",
                "enabled must be true or false",
            ));
        };
        s.enabled = *b;
    }
    Ok(())
}

/// `POST /schedules/`.
pub(crate) async fn create(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    ctx.require_create()?;
    let m = object_body(ctx.read_json().await?, "a schedule")?;
    if !m.contains_key("plugin_id") {
        return Err(ApiError::invalid("plugin_id", "this field is required"));
    }
    let now = Timestamp::now();
    let mut s = Schedule {
        id: ScheduleId::new(),
        number: 0,
        org: Some(ctx.caller.org().clone()),
        plugin_id: String::new(),
        object_set: None,
        interval: Interval::from_secs(86_400)?,
        enabled: true,
        next_run_at: now,
        last_run_at: None,
        created_at: now,
        owner: None,
        disabled_reason: None,
    };
    apply_schedule(ctx, &m, &mut s).await?;
    take_over(ctx, &mut s).await?;
    let s = ctx.inner.tasks.put_schedule(s).await?;
    Ok(created(&schedule_json(&s, &set_numbers(ctx).await?)))
}

/// `GET /schedules/`.
pub(crate) async fn list(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query
        .only(&["plugin_id", "enabled", "limit", "offset"])?;
    let p = ctx.list_params()?;
    let scope = ctx.list_scope(&p)?;
    let plugin = ctx.query.one("plugin_id")?.map(str::to_string);
    let enabled = ctx.query.flag("enabled")?;
    let mut all = ctx
        .inner
        .tasks
        .list_schedules(Some(ctx.caller.org()))
        .await?;
    all.retain(|s| {
        s.org.as_ref() == Some(ctx.caller.org())
            && plugin.as_ref().is_none_or(|p| *p == s.plugin_id)
            && enabled.is_none_or(|e| e == s.enabled)
    });
    all.sort_by(|a, b| a.number.cmp(&b.number).then(a.id.cmp(&b.id)));
    let all = scoped(all, &scope, |s| [s.number.to_string(), s.id.to_string()]);
    let (count, items) = page_of(all, &p);
    let sets = set_numbers(ctx).await?;
    Ok(ctx.page(
        &p,
        count,
        items.iter().map(|s| schedule_json(s, &sets)).collect(),
    ))
}

/// The caller's schedule `raw`, checked against the route's permission.
async fn load_schedule(ctx: &Ctx<'_>, raw: &str) -> ApiResult<Schedule> {
    let r = IdRef::parse(raw, "a schedule", "id")?;
    let org = ctx.caller.org();
    let found = match r {
        IdRef::Uuid(u) => ctx.inner.tasks.get_schedule(ScheduleId(u)).await?,
        IdRef::Number(n) => ctx
            .inner
            .tasks
            .list_schedules(Some(org))
            .await?
            .into_iter()
            .find(|s| s.number == n),
    }
    .filter(|s| s.org.as_ref() == Some(org));
    match found {
        Some(s) => {
            pk_allows(ctx, s.number, &s.id.to_string())?;
            Ok(s)
        }
        None => {
            // A scope that does not admit the id is a 403 whether or not the schedule exists.
            ctx.require_pk(raw)?;
            Err(ApiError::not_found(format!("No schedule {raw}.")))
        }
    }
}

/// `GET /schedules/<id>/`.
pub(crate) async fn retrieve(ctx: &mut Ctx<'_>, raw: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let s = load_schedule(ctx, raw).await?;
    Ok(ok(&schedule_json(&s, &set_numbers(ctx).await?)))
}

/// `PATCH /schedules/<id>/`.
pub(crate) async fn update(ctx: &mut Ctx<'_>, raw: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let mut s = load_schedule(ctx, raw).await?;
    let m = object_body(ctx.read_json().await?, "the fields to change")?;
    apply_schedule(ctx, &m, &mut s).await?;
    // Changing the plugin or enabling the schedule binds it to the caller's rights.
    if m.contains_key("plugin_id") || m.get("enabled") == Some(&Value::Bool(true)) {
        take_over(ctx, &mut s).await?;
    }
    let s = ctx.inner.tasks.put_schedule(s).await?;
    Ok(ok(&schedule_json(&s, &set_numbers(ctx).await?)))
}

/// `DELETE /schedules/<id>/`.
pub(crate) async fn destroy(ctx: &mut Ctx<'_>, raw: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let s = load_schedule(ctx, raw).await?;
    ctx.inner.tasks.delete_schedule(s.id).await?;
    Ok(body::no_content())
}

// ---------------------------------------------------------------- object sets

fn set_json(s: &ObjectSet) -> Value {
    let filters: Map<String, Value> = s
        .filters
        .iter()
        .map(|(f, v)| (f.clone(), json!(v)))
        .collect();
    json!({
        "id": s.number,
        "uuid": s.id.to_string(),
        "organization": s.org.as_str(),
        "name": s.name,
        "description": s.description,
        "object_type": s.object_type.as_str(),
        "all": s.all,
        "filters": filters,
        "keys": s.keys.iter().map(NaturalKey::as_str).collect::<Vec<_>>(),
    })
}

const SET_FIELDS: [&str; 6] = [
    "name",
    "description",
    "object_type",
    "all",
    "filters",
    "keys",
];

fn text_field(m: &Map<String, Value>, name: &str, max: usize) -> ApiResult<Option<String>> {
    match m.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if s.len() <= max && !s.chars().any(char::is_control) => {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ApiError::invalid(
            name,
            format!("{name} must be a string of at most {max} characters"),
        )),
    }
}

async fn apply_set(ctx: &Ctx<'_>, m: &Map<String, Value>, s: &mut ObjectSet) -> ApiResult<()> {
    only_fields(m, &SET_FIELDS)?;
    if let Some(name) = text_field(m, "name", 128)? {
        if name.trim().is_empty() {
            return Err(ApiError::invalid("name", "name cannot be empty"));
        }
        s.name = name;
    }
    if let Some(d) = text_field(m, "description", 4096)? {
        s.description = d;
    }
    if let Some(v) = m.get("object_type") {
        let Value::String(t) = v else {
            return Err(ApiError::invalid(
                "object_type",
                "object_type must be a string",
            ));
        };
        s.object_type = t
            .parse::<ObjectType>()
            .map_err(|e| ApiError::from(e).with_attr("object_type"))?;
    }
    if let Some(v) = m.get("all") {
        let Value::Bool(b) = v else {
            return Err(ApiError::invalid("all", "all must be true or false"));
        };
        s.all = *b;
    }
    if let Some(v) = m.get("filters") {
        let Value::Object(f) = v else {
            return Err(ApiError::invalid(
                "filters",
                "filters must be an object: {\"field\": [\"value\", ...]}",
            ));
        };
        let mut out = Vec::new();
        for (field, values) in f {
            let at = format!("filters.{field}");
            let values: Vec<String> = match values {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        Value::Number(n) => Ok(n.to_string()),
                        Value::Bool(b) => Ok(b.to_string()),
                        _ => Err(ApiError::invalid(at.as_str(), "filter values are strings")),
                    })
                    .collect::<ApiResult<_>>()?,
                _ => {
                    return Err(ApiError::invalid(
                        at.as_str(),
                        "a filter is a value or a list of values",
                    ));
                }
            };
            if values.is_empty() {
                return Err(ApiError::invalid(
                    at.as_str(),
                    "a filter needs at least one value",
                ));
            }
            out.push((field.clone(), values));
        }
        s.filters = out;
    }
    // Filters must name fields of the (possibly new) type.
    // The effective scan level and `declared` count as fields of the types with levels.
    let fields = kat_core::store::filter_fields(s.object_type);
    for (field, _) in &s.filters {
        if !fields.contains(&field.as_str()) {
            return Err(ApiError::invalid(
                format!("filters.{field}"),
                format!(
                    "{} has no field {field:?}; fields: {}",
                    s.object_type,
                    fields.join(", ")
                ),
            ));
        }
    }
    if let Some(v) = m.get("keys") {
        let Value::Array(items) = v else {
            return Err(ApiError::invalid(
                "keys",
                "keys must be a list of natural keys",
            ));
        };
        let mut keys = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, k) in items.iter().enumerate() {
            let Value::String(k) = k else {
                return Err(ApiError::invalid(format!("keys[{i}]"), "a key is a string"));
            };
            let key = s
                .object_type
                .parse_key(k)
                .map_err(|e| ApiError::from(e).with_attr(format!("keys[{i}]")))?;
            if seen.insert(key.clone()) {
                keys.push(key);
            }
        }
        s.keys = keys;
    } else {
        for (i, k) in s.keys.iter().enumerate() {
            s.object_type
                .parse_key(k.as_str())
                .map_err(|e| ApiError::from(e).with_attr(format!("keys[{i}]")))?;
        }
    }
    // Names are unique within an organization.
    let others = ctx
        .inner
        .tasks
        .list_object_sets(Some(ctx.caller.org()))
        .await?;
    if others.iter().any(|o| o.id != s.id && o.name == s.name) {
        return Err(ApiError::new(
            http::StatusCode::CONFLICT,
            crate::error::ErrorType::Client,
            "conflict",
            format!("an object set named {:?} exists", s.name),
        )
        .with_attr("name"));
    }
    Ok(())
}

/// `POST /object-sets/`.
pub(crate) async fn create_set(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    ctx.require_create()?;
    let m = object_body(ctx.read_json().await?, "an object set")?;
    for required in ["name", "object_type"] {
        if !m.contains_key(required) {
            return Err(ApiError::invalid(required, "this field is required"));
        }
    }
    let mut s = ObjectSet {
        id: ObjectSetId::new(),
        number: 0,
        name: String::new(),
        description: String::new(),
        org: ctx.caller.org().clone(),
        object_type: ObjectType::Hostname,
        all: false,
        filters: Vec::new(),
        keys: Vec::new(),
    };
    apply_set(ctx, &m, &mut s).await?;
    let s = ctx.inner.tasks.put_object_set(s).await?;
    Ok(created(&set_json(&s)))
}

/// `GET /object-sets/`.
pub(crate) async fn list_sets(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&["object_type", "limit", "offset"])?;
    let p = ctx.list_params()?;
    let scope = ctx.list_scope(&p)?;
    let ty = ctx
        .query
        .one("object_type")?
        .map(|t| {
            t.parse::<ObjectType>()
                .map_err(|e| ApiError::from(e).with_attr("object_type"))
        })
        .transpose()?;
    let mut all = ctx
        .inner
        .tasks
        .list_object_sets(Some(ctx.caller.org()))
        .await?;
    all.retain(|s| s.org == *ctx.caller.org() && ty.is_none_or(|t| t == s.object_type));
    all.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let all = scoped(all, &scope, |s| [s.number.to_string(), s.id.to_string()]);
    let (count, items) = page_of(all, &p);
    Ok(ctx.page(&p, count, items.iter().map(set_json).collect()))
}

/// The caller's object set `raw`, checked against the route's permission.
async fn load_set(ctx: &Ctx<'_>, raw: &str) -> ApiResult<ObjectSet> {
    match find_set(ctx, IdRef::parse(raw, "an object set", "id")?).await? {
        Some(s) => {
            pk_allows(ctx, s.number, &s.id.to_string())?;
            Ok(s)
        }
        None => {
            // A scope that does not admit the id is a 403 whether or not the set exists.
            ctx.require_pk(raw)?;
            Err(ApiError::not_found(format!("No object set {raw}.")))
        }
    }
}

/// `GET /object-sets/<id>/`.
pub(crate) async fn retrieve_set(ctx: &mut Ctx<'_>, raw: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let s = load_set(ctx, raw).await?;
    Ok(ok(&set_json(&s)))
}

/// `PATCH /object-sets/<id>/`.
pub(crate) async fn update_set(ctx: &mut Ctx<'_>, raw: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let mut s = load_set(ctx, raw).await?;
    let m = object_body(ctx.read_json().await?, "the fields to change")?;
    apply_set(ctx, &m, &mut s).await?;
    let s = ctx.inner.tasks.put_object_set(s).await?;
    Ok(ok(&set_json(&s)))
}

/// `DELETE /object-sets/<id>/`: refused (409) while a schedule uses the set.
pub(crate) async fn destroy_set(ctx: &mut Ctx<'_>, raw: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let s = load_set(ctx, raw).await?;
    let schedules = ctx
        .inner
        .tasks
        .list_schedules(Some(ctx.caller.org()))
        .await?;
    if let Some(used) = schedules.iter().find(|x| x.object_set == Some(s.id)) {
        return Err(ApiError::new(
            http::StatusCode::CONFLICT,
            crate::error::ErrorType::Client,
            "conflict",
            format!(
                "schedule {} uses this object set; delete or change it first",
                used.number
            ),
        ));
    }
    ctx.inner.tasks.delete_object_set(s.id).await?;
    Ok(body::no_content())
}
