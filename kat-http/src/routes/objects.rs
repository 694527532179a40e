//! `/objects/`: bulk writes, per-type lists, details, deletes and a hostname's DNS records.

use std::collections::BTreeSet;

use http::{Response, StatusCode};
use serde_json::Value;

use kat_core::object::{NaturalKey, Object, ObjectType, ScanLevel, ScanProfile};
use kat_core::permission::{Action, PermissionName, Resource};
use kat_core::store::{ObjectQuery, Ordering, StoredObject};

use super::{Ctx, created, object_body, ok};
use crate::auth::ListScope;
use crate::body::{self, ApiBody};
use crate::error::{ApiError, ApiResult};

fn to_json(o: &StoredObject) -> Value {
    Value::Object(o.to_json())
}

/// A stored object as the API answers with it: its JSON ([`StoredObject::json`], written straight
/// into the response) with `dns_records` on a hostname.
struct ObjectOut<'a> {
    object: &'a StoredObject,
    extra: Vec<(&'static str, Value)>,
}

impl serde::Serialize for ObjectOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.object.json(&self.extra).serialize(s)
    }
}

/// The answer for stored objects, with `dns_records` on every hostname as the original serializes
/// it: the hostname's DNS records (each with its `id`, fields, `hostname`, `ttl` and `object_type`),
/// those of the record types (and keys) the caller may view. One query per record type for the
/// whole list.
async fn objects_json<'a>(
    ctx: &Ctx<'_>,
    objects: &'a [StoredObject],
) -> ApiResult<Vec<ObjectOut<'a>>> {
    let hosts: Vec<String> = objects
        .iter()
        .filter(|o| o.object_type() == ObjectType::Hostname)
        .map(|o| o.key.as_str().to_string())
        .collect();
    let mut records: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    if !hosts.is_empty() {
        // One query, its type changed for each record type: the hostnames are not copied again.
        let mut q = ObjectQuery::new(ctx.caller.org().clone(), ObjectType::Hostname);
        q.filters.push(("hostname".into(), hosts));
        q.limit = 0;
        for ty in ObjectType::DNS_RECORDS {
            let view = PermissionName::new(Action::View, Resource::Object(ty));
            if !ctx.caller.has(&view) {
                continue;
            }
            q.object_type = ty;
            for r in ctx.inner.objects.query(&q).await?.items {
                if ctx.caller.require_pk(view, r.key.as_str()).is_err() {
                    continue;
                }
                let Object::Dns(d) = &r.object else { continue };
                records
                    .entry(d.hostname.key().into_string())
                    .or_default()
                    .push(to_json(&r));
            }
        }
    }
    Ok(objects
        .iter()
        .map(|o| {
            let mut extra = Vec::new();
            if o.object_type() == ObjectType::Hostname {
                let mut list = records.remove(o.key.as_str()).unwrap_or_default();
                list.sort_by(|a, b| {
                    (a["object_type"].as_str(), a["id"].as_str())
                        .cmp(&(b["object_type"].as_str(), b["id"].as_str()))
                });
                extra.push(("dns_records", Value::Array(list)));
            }
            ObjectOut { object: o, extra }
        })
        .collect())
}

/// The answer to a bulk write: each type's objects under its name, in the order of the request
/// body's names (a JSON map's, which the answer's map had too).
struct ByType<'a>(Vec<(&'a str, Vec<ObjectOut<'a>>)>);

impl serde::Serialize for ByType<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(name, objects)| (name, objects)))
    }
}

/// [`objects_json`] of one object.
async fn object_json<'a>(ctx: &Ctx<'_>, o: &'a StoredObject) -> ApiResult<ObjectOut<'a>> {
    let mut all = objects_json(ctx, std::slice::from_ref(o)).await?;
    Ok(all.pop().unwrap_or(ObjectOut {
        object: o,
        extra: Vec::new(),
    }))
}

fn parse_key(ty: ObjectType, raw: &str) -> ApiResult<NaturalKey> {
    ty.parse_key(raw).map_err(ApiError::from)
}

/// Validate a list of objects of one type; errors at `<prefix>[i].<field>`.
fn validate_all(ty: ObjectType, items: &[Value], prefix: &str) -> ApiResult<Vec<Object>> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Object::from_json(ty, v)
                .map_err(|e| ApiError::from(e.within(&format!("{prefix}[{i}]"))))
        })
        .collect()
}

/// A finding that names its subject with `object` (the manual's `"object": "internet|<host>"`) must
/// name an object that exists in the caller's organization: 400 at `<prefix>[i].object` otherwise (a
/// finding written with `hostname` or `address` creates its subject, as the original's API does not).
async fn check_objects_exist(
    ctx: &Ctx<'_>,
    items: &[Value],
    objects: &[Object],
    prefix: Option<&str>,
    written: &BTreeSet<(ObjectType, NaturalKey)>,
) -> ApiResult<()> {
    for (i, (v, o)) in items.iter().zip(objects).enumerate() {
        let named = matches!(v, Value::Object(m) if m.get("object").is_some_and(|x| !x.is_null()));
        let Object::Finding(f) = o else { continue };
        if !named {
            continue;
        }
        let (ty, key) = match (&f.hostname, &f.address) {
            (Some(h), _) => (ObjectType::Hostname, h.key()),
            (None, Some(a)) => (ObjectType::IpAddress, a.key()),
            (None, None) => continue,
        };
        if !written.contains(&(ty, key.clone()))
            && ctx
                .inner
                .objects
                .get(ctx.caller.org(), ty, &key)
                .await?
                .is_none()
        {
            let attr = match prefix {
                None => "object".to_string(),
                Some(p) => format!("{p}[{i}].object"),
            };
            return Err(ApiError::invalid(
                attr,
                format!("no {ty} {key} in this organization; a finding's object must exist"),
            ));
        }
    }
    Ok(())
}

/// The caller may create each of these objects (its `add_<type>` scope admits each key).
fn check_create(ctx: &Ctx<'_>, ty: ObjectType, objects: &[Object]) -> ApiResult<()> {
    let name = ctx.permission_for(ty)?;
    if !ctx.caller.has(&name) {
        return Err(ApiError::permission_denied(format!(
            "You do not have permission to perform this action ({name})."
        )));
    }
    for o in objects {
        ctx.caller.require_pk(name, o.natural_key().as_str())?;
    }
    Ok(())
}

/// The permission to change a scan level, refused with the field that asked for it.
fn require_set_level(ctx: &Ctx<'_>, key: &NaturalKey, attr: &str) -> ApiResult<()> {
    let name = PermissionName::SET_SCAN_LEVEL;
    ctx.caller.require_pk(name, key.as_str()).map_err(|_| {
        ApiError::permission_denied(format!(
            "You do not have permission to perform this action ({name} on {:?}): changing a scan level needs it, and a task's token never holds it.",
            key.as_str()
        ))
        .with_attr(attr)
    })
}

/// Whether an object's JSON carries a scan level: `scan_level` other than `null`, or `declared: true`.
fn carries_level(v: &Value) -> Option<&'static str> {
    match v {
        Value::Object(m) if m.get("scan_level").is_some_and(|l| !l.is_null()) => Some("scan_level"),
        Value::Object(m) if m.get("declared") == Some(&Value::Bool(true)) => Some("declared"),
        _ => None,
    }
}

/// Objects written with a scan level need `objects.can_set_scan_level` for each (the level itself
/// is not stored by a write: it is set with `PATCH`); a task's token never holds it, so a plugin's
/// write that carries a level is a 403 and nothing is written.
fn check_levels(
    ctx: &Ctx<'_>,
    items: &[Value],
    objects: &[Object],
    prefix: Option<&str>,
) -> ApiResult<()> {
    for (i, (v, o)) in items.iter().zip(objects).enumerate() {
        if let Some(field) = carries_level(v) {
            let attr = match prefix {
                None => field.to_string(),
                Some(p) => format!("{p}[{i}].{field}"),
            };
            require_set_level(ctx, &o.natural_key(), &attr)?;
        }
    }
    Ok(())
}

/// `POST /objects/`: `{"<type>": [...], ...}`, all or nothing.
pub(crate) async fn bulk_create(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let body = object_body(ctx.read_json().await?, "keyed by object type")?;
    let mut groups: Vec<(String, ObjectType, Vec<Value>)> = Vec::with_capacity(body.len());
    for (k, v) in body {
        let ty: ObjectType = k.parse().map_err(|_| {
            ApiError::invalid(
                k.as_str(),
                format!(
                    "unknown object type {k:?}; known types: {}",
                    ObjectType::ALL.map(ObjectType::as_str).join(", ")
                ),
            )
        })?;
        let items = match v {
            Value::Array(items) => items,
            _ => {
                return Err(ApiError::invalid(
                    k.as_str(),
                    format!("expected a list of {ty} objects"),
                ));
            }
        };
        let name = ctx.permission_for(ty)?;
        if !ctx.caller.has(&name) {
            return Err(ApiError::permission_denied(format!(
                "You do not have permission to perform this action ({name})."
            )));
        }
        groups.push((k, ty, items));
    }
    let mut all = Vec::new();
    let mut sizes = Vec::with_capacity(groups.len());
    for (k, ty, items) in &groups {
        let objects = validate_all(*ty, items, k)?;
        check_create(ctx, *ty, &objects)?;
        check_levels(ctx, items, &objects, Some(k))?;
        sizes.push(objects.len());
        all.extend(objects);
    }
    // A finding's `object` may name an object written by the same request (only findings name
    // one: a request without them computes no keys here).
    let in_request: BTreeSet<(ObjectType, NaturalKey)> =
        if groups.iter().any(|(_, ty, _)| *ty == ObjectType::Finding) {
            all.iter()
                .map(|o| (o.object_type(), o.natural_key()))
                .collect()
        } else {
            BTreeSet::new()
        };
    let mut at = 0;
    for ((k, _, items), n) in groups.iter().zip(&sizes) {
        check_objects_exist(ctx, items, &all[at..at + n], Some(k), &in_request).await?;
        at += n;
    }
    let stored = if all.is_empty() {
        Vec::new()
    } else {
        ctx.inner
            .objects
            .upsert(ctx.caller.org(), all, ctx.caller.task())
            .await?
    };
    let touched: Vec<Object> = stored.iter().map(|s| s.object.clone()).collect();
    written(ctx, &touched).await?;
    let mut it = objects_json(ctx, &stored).await?.into_iter();
    let mut out: Vec<(&str, Vec<ObjectOut<'_>>)> = Vec::with_capacity(groups.len());
    for ((k, _, _), n) in groups.iter().zip(sizes) {
        out.push((k, it.by_ref().take(n).collect()));
    }
    Ok(created(&ByType(out)))
}

/// `POST /objects/<type>/`: one object or a list, answered in the same shape.
pub(crate) async fn create(ctx: &mut Ctx<'_>, ty: ObjectType) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let name = ctx.permission()?;
    if !ctx.caller.has(&name) {
        return Err(ApiError::permission_denied(format!(
            "You do not have permission to perform this action ({name})."
        )));
    }
    let v = ctx.read_json().await?;
    let (items, single) = match v {
        Value::Array(items) => (items, false),
        Value::Object(_) => (vec![v], true),
        _ => {
            return Err(ApiError::invalid(
                "",
                format!("expected a {ty} object or a list of them"),
            ));
        }
    };
    let objects = if single {
        vec![Object::from_json(ty, &items[0])?]
    } else {
        validate_all(ty, &items, "")?
    };
    check_create(ctx, ty, &objects)?;
    check_levels(ctx, &items, &objects, (!single).then_some(""))?;
    check_objects_exist(
        ctx,
        &items,
        &objects,
        (!single).then_some(""),
        &BTreeSet::new(),
    )
    .await?;
    let stored = if objects.is_empty() {
        Vec::new()
    } else {
        ctx.inner
            .objects
            .upsert(ctx.caller.org(), objects, ctx.caller.task())
            .await?
    };
    let touched: Vec<Object> = stored.iter().map(|s| s.object.clone()).collect();
    written(ctx, &touched).await?;
    if single {
        let first = match stored.first() {
            Some(o) => Some(object_json(ctx, o).await?),
            None => None,
        };
        Ok(created(&first))
    } else {
        Ok(created(&objects_json(ctx, &stored).await?))
    }
}

/// Tell the engine which objects a write touched (their data as written, or as they were before a
/// deletion), so that business rules' findings are up to date when the write is answered.
async fn written(ctx: &Ctx<'_>, objects: &[Object]) -> ApiResult<()> {
    if let Some(c) = &ctx.inner.control
        && !objects.is_empty()
    {
        c.objects_written(ctx.caller.org(), objects).await?;
    }
    Ok(())
}

/// The objects about to be deleted, for [`written`] (nothing without an engine).
async fn before_delete(
    ctx: &Ctx<'_>,
    ty: ObjectType,
    keys: &[NaturalKey],
) -> ApiResult<Vec<Object>> {
    if ctx.inner.control.is_none() || keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = ObjectQuery::new(ctx.caller.org().clone(), ty);
    q.keys = Some(keys.to_vec());
    q.limit = 0;
    Ok(ctx
        .inner
        .objects
        .query(&q)
        .await?
        .items
        .into_iter()
        .map(|s| s.object)
        .collect())
}

/// `GET /objects/<type>/`.
pub(crate) async fn list(ctx: &mut Ctx<'_>, ty: ObjectType) -> ApiResult<Response<ApiBody>> {
    let filters = kat_core::store::filter_fields(ty);
    let mut known: Vec<&str> = filters.clone();
    known.extend(["id", "search", "ordering", "limit", "offset"]);
    ctx.query.only(&known)?;
    let p = ctx.list_params()?;
    let scope = ctx.list_scope(&p)?;
    let mut q = ObjectQuery::new(ctx.caller.org().clone(), ty);
    for f in &filters {
        let values = ctx.query.all(f);
        if !values.is_empty() {
            q.filters.push((
                (*f).to_string(),
                values.iter().map(|s| s.to_string()).collect(),
            ));
        }
    }
    let ids = ctx.query.all("id");
    let mut keys: Option<Vec<NaturalKey>> = if ids.is_empty() {
        None
    } else {
        Some(
            ids.iter()
                .map(|s| parse_key(ty, s).map_err(|e| e.with_attr("id")))
                .collect::<ApiResult<_>>()?,
        )
    };
    if let ListScope::Only(pks) = scope {
        keys = Some(match keys {
            Some(k) => k.into_iter().filter(|k| pks.contains(k.as_str())).collect(),
            None => pks
                .iter()
                .filter_map(|s| NaturalKey::parse(s).ok())
                .collect(),
        });
    }
    q.keys = keys;
    q.search = p.search.clone();
    q.ordering = p.ordering.as_deref().map(Ordering::parse);
    q.limit = p.limit;
    q.offset = p.offset;
    q.validate()?;
    let page = ctx.inner.objects.query(&q).await?;
    let results = objects_json(ctx, &page.items).await?;
    Ok(ctx.page(&p, page.count, results))
}

async fn load(ctx: &Ctx<'_>, ty: ObjectType, key: &NaturalKey) -> ApiResult<StoredObject> {
    ctx.inner
        .objects
        .get(ctx.caller.org(), ty, key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No {ty} {:?}.", key.as_str())))
}

/// `GET /objects/<type>/<key>/`.
pub(crate) async fn retrieve(
    ctx: &mut Ctx<'_>,
    ty: ObjectType,
    raw: &str,
) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let key = parse_key(ty, raw)?;
    ctx.require_pk(key.as_str())?;
    let o = load(ctx, ty, &key).await?;
    Ok(ok(&object_json(ctx, &o).await?))
}

fn scan_profile(v: &Value) -> ApiResult<ScanProfile> {
    match v {
        Value::Null => Ok(ScanProfile {
            level: None,
            declared: false,
        }),
        Value::Number(n) => {
            let level = n
                .as_u64()
                .and_then(|l| u8::try_from(l).ok())
                .ok_or_else(|| ApiError::invalid("scan_level", "scan_level must be 0 to 4 or null"))
                .and_then(|l| ScanLevel::new(l).map_err(ApiError::from))?;
            Ok(ScanProfile::declared(level))
        }
        _ => Err(ApiError::invalid(
            "scan_level",
            "scan_level must be 0 to 4 or null",
        )),
    }
}

/// `PATCH /objects/<type>/<key>/`: `scan_level` (declared, or `null` for inherited) and non-key
/// attributes: a field the body does not name keeps its value, one set to `null` is cleared, a list
/// replaces the stored list (the store's `replace`).
pub(crate) async fn update(
    ctx: &mut Ctx<'_>,
    ty: ObjectType,
    raw: &str,
) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let key = parse_key(ty, raw)?;
    ctx.require_pk(key.as_str())?;
    let mut patch = object_body(ctx.read_json().await?, "the fields to change")?;
    // Any scan-level field in a PATCH changes (or claims) a level: it needs its own permission,
    // checked before anything is written.
    for field in ["scan_level", "declared"] {
        if patch.contains_key(field) {
            require_set_level(ctx, &key, field)?;
        }
    }
    let stored = load(ctx, ty, &key).await?;
    let scan = match patch.remove("scan_level") {
        None => None,
        Some(_) if !ty.has_scan_level() => {
            return Err(ApiError::invalid(
                "scan_level",
                format!("{ty} objects have no scan level"),
            ));
        }
        Some(v) => Some(scan_profile(&v)?),
    };
    patch.remove("declared");
    let changed = if patch.is_empty() {
        None
    } else {
        let mut merged = stored.object.to_json();
        let keys: Vec<String> = patch.keys().cloned().collect();
        merged.extend(patch);
        let o = Object::from_json(ty, &Value::Object(merged))?;
        if o.natural_key() != stored.key {
            return Err(ApiError::invalid(
                keys.first().map(String::as_str).unwrap_or(""),
                "the fields of an object's natural key cannot change; create a new object instead",
            ));
        }
        Some(o)
    };
    if let Some(o) = changed {
        let s = ctx
            .inner
            .objects
            .replace(ctx.caller.org(), o, ctx.caller.task())
            .await?;
        written(ctx, &[stored.object.clone(), s.object]).await?;
    }
    if let Some(profile) = scan {
        ctx.inner
            .objects
            .set_scan_profile(ctx.caller.org(), ty, &key, profile)
            .await?;
    }
    let o = load(ctx, ty, &key).await?;
    if scan.is_some() {
        // A level given (or taken away) changes what schedules may scan, here and through inheritance.
        written(ctx, std::slice::from_ref(&o.object)).await?;
    }
    Ok(ok(&object_json(ctx, &o).await?))
}

/// `DELETE /objects/<type>/<key>/`.
pub(crate) async fn destroy(
    ctx: &mut Ctx<'_>,
    ty: ObjectType,
    raw: &str,
) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let key = parse_key(ty, raw)?;
    ctx.require_pk(key.as_str())?;
    let gone = before_delete(ctx, ty, std::slice::from_ref(&key)).await?;
    let n = ctx
        .inner
        .objects
        .delete(ctx.caller.org(), ty, std::slice::from_ref(&key))
        .await?;
    if n == 0 {
        return Err(ApiError::not_found(format!("No {ty} {:?}.", key.as_str())));
    }
    written(ctx, &gone).await?;
    Ok(body::no_content())
}

/// `DELETE /objects/<type>/?id=a&id=b`: only the listed objects; no ids is a 400, never "all".
pub(crate) async fn delete_many(ctx: &mut Ctx<'_>, ty: ObjectType) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&["id"])?;
    let ids = ctx.query.all("id");
    if ids.is_empty() {
        return Err(ApiError::invalid(
            "id",
            "name the objects to delete with ?id=<key>&id=<key>; deleting every object is not supported",
        ));
    }
    let keys: Vec<NaturalKey> = ids
        .iter()
        .map(|s| parse_key(ty, s).map_err(|e| e.with_attr("id")))
        .collect::<ApiResult<_>>()?;
    for k in &keys {
        ctx.require_pk(k.as_str())?;
    }
    let gone = before_delete(ctx, ty, &keys).await?;
    let n = ctx
        .inner
        .objects
        .delete(ctx.caller.org(), ty, &keys)
        .await?;
    written(ctx, &gone).await?;
    Ok(body::json(
        StatusCode::OK,
        &serde_json::json!({"deleted": n}),
    ))
}

async fn find_records(
    ctx: &Ctx<'_>,
    host: &NaturalKey,
    candidates: &BTreeSet<NaturalKey>,
) -> ApiResult<Vec<(ObjectType, NaturalKey)>> {
    let mut found = Vec::new();
    if candidates.is_empty() {
        return Ok(found);
    }
    for ty in ObjectType::DNS_RECORDS {
        let mut q = ObjectQuery::new(ctx.caller.org().clone(), ty);
        q.filters
            .push(("hostname".into(), vec![host.as_str().to_string()]));
        q.keys = Some(candidates.iter().cloned().collect());
        q.limit = candidates.len();
        let page = ctx.inner.objects.query(&q).await?;
        found.extend(page.items.into_iter().map(|o| (ty, o.key)));
    }
    Ok(found)
}

/// `POST /levels/recompute/`: a full recomputation of the caller's organization's inherited
/// scan levels (`objects.can_set_scan_level`, unscoped; never a task's token). Answers
/// `{"changed": n}`.
pub(crate) async fn recompute_levels(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    if ctx.caller.task().is_some() {
        return Err(ApiError::permission_denied(
            "A task token can never recompute scan levels.",
        ));
    }
    ctx.require_create()?;
    let org = ctx.caller.org().clone();
    let started = std::time::Instant::now();
    let changed = ctx.inner.objects.recompute_levels(Some(&org)).await?;
    tracing::info!(org = %org, changed, ms = started.elapsed().as_millis() as u64, "recomputed scan levels on request");
    Ok(ok(&serde_json::json!({ "changed": changed })))
}

/// `DELETE /objects/hostname/<key>/dnsrecord/?record_id=a&record_id=b,c`: that hostname's records
/// only, each needing `objects.delete_<its record type>`.
pub(crate) async fn delete_dns_records(
    ctx: &mut Ctx<'_>,
    raw: &str,
) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&["record_id"])?;
    let host = parse_key(ObjectType::Hostname, raw)?;
    let values = ctx.query.all("record_id");
    if values.is_empty() {
        return Err(ApiError::invalid(
            "record_id",
            "record_ids should be a non-empty list: ?record_id=<key>&record_id=<key>",
        ));
    }
    let delete_perms: Vec<PermissionName> = ObjectType::DNS_RECORDS
        .iter()
        .map(|t| ctx.permission_for(*t))
        .collect::<ApiResult<_>>()?;
    if !delete_perms.iter().any(|p| ctx.caller.has(p)) {
        return Err(ApiError::permission_denied(
            "You do not have permission to perform this action (objects.delete_<dns record type>).",
        ));
    }
    // A value is a key as it is; when no record has it and it holds commas, it is a comma list.
    let whole: BTreeSet<NaturalKey> = values
        .iter()
        .filter_map(|v| NaturalKey::parse(v).ok())
        .collect();
    let mut found = find_records(ctx, &host, &whole).await?;
    let parts: BTreeSet<NaturalKey> = values
        .iter()
        .filter(|v| v.contains(',') && !found.iter().any(|(_, k)| k.as_str() == **v))
        .flat_map(|v| v.split(','))
        .filter_map(|p| NaturalKey::parse(p.trim()).ok())
        .filter(|k| !found.iter().any(|(_, f)| f == k))
        .collect();
    found.extend(find_records(ctx, &host, &parts).await?);
    for (ty, k) in &found {
        ctx.caller
            .require_pk(ctx.permission_for(*ty)?, k.as_str())?;
    }
    let mut deleted = 0;
    for ty in ObjectType::DNS_RECORDS {
        let keys: Vec<NaturalKey> = found
            .iter()
            .filter(|(t, _)| *t == ty)
            .map(|(_, k)| k.clone())
            .collect();
        if !keys.is_empty() {
            let gone = before_delete(ctx, ty, &keys).await?;
            deleted += ctx
                .inner
                .objects
                .delete(ctx.caller.org(), ty, &keys)
                .await?;
            written(ctx, &gone).await?;
        }
    }
    Ok(body::json(
        StatusCode::OK,
        &serde_json::json!({"deleted": deleted}),
    ))
}
