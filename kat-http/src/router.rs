//! Routes: the path patterns under `/api/v1/`, their methods, and the dispatch to handlers.

use http::Method;

use kat_core::object::ObjectType;

use crate::error::{ApiError, ApiResult};
use crate::query::decode_segment;

/// The API prefix.
pub(crate) const PREFIX: &str = "/api/v1";

/// A matched route with its decoded path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Schema,
    ObjectsBulk,
    ObjectList(ObjectType),
    ObjectDetail(ObjectType, String),
    HostnameDnsRecords(String),
    FileList,
    FileDetail(String),
    FileDownload(String),
    TaskList,
    TaskDetail(String),
    TaskCancel(String),
    ScheduleList,
    ScheduleDetail(String),
    ObjectSetList,
    ObjectSetDetail(String),
    PluginList,
    PluginDetail(String),
    PluginEnable(String),
    PluginDisable(String),
    OrgList,
    OrgDetail(String),
}

impl Route {
    /// The route's pattern, for logs and traces (never the raw path, which may hold keys).
    pub(crate) fn pattern(&self) -> &'static str {
        match self {
            Route::Schema => "/api/v1/schema/",
            Route::ObjectsBulk => "/api/v1/objects/",
            Route::ObjectList(_) => "/api/v1/objects/{type}/",
            Route::ObjectDetail(..) => "/api/v1/objects/{type}/{key}/",
            Route::HostnameDnsRecords(_) => "/api/v1/objects/hostname/{key}/dnsrecord/",
            Route::FileList => "/api/v1/file/",
            Route::FileDetail(_) => "/api/v1/file/{id}/",
            Route::FileDownload(_) => "/api/v1/file/{id}/download/",
            Route::TaskList => "/api/v1/tasks/",
            Route::TaskDetail(_) => "/api/v1/tasks/{id}/",
            Route::TaskCancel(_) => "/api/v1/tasks/{id}/cancel/",
            Route::ScheduleList => "/api/v1/schedules/",
            Route::ScheduleDetail(_) => "/api/v1/schedules/{id}/",
            Route::ObjectSetList => "/api/v1/object-sets/",
            Route::ObjectSetDetail(_) => "/api/v1/object-sets/{id}/",
            Route::PluginList => "/api/v1/plugins/",
            Route::PluginDetail(_) => "/api/v1/plugins/{id}/",
            Route::PluginEnable(_) => "/api/v1/plugins/{id}/enable/",
            Route::PluginDisable(_) => "/api/v1/plugins/{id}/disable/",
            Route::OrgList => "/api/v1/organizations/",
            Route::OrgDetail(_) => "/api/v1/organizations/{code}/",
        }
    }

    /// The methods the route answers.
    pub(crate) fn methods(&self) -> &'static [&'static str] {
        match self {
            Route::Schema => &["GET", "HEAD"],
            Route::ObjectsBulk => &["POST"],
            Route::ObjectList(_) => &["GET", "HEAD", "POST", "DELETE"],
            Route::ObjectDetail(..) => &["GET", "HEAD", "PATCH", "DELETE"],
            Route::HostnameDnsRecords(_) => &["DELETE"],
            Route::FileList => &["GET", "HEAD", "POST"],
            Route::FileDetail(_) => &["GET", "HEAD", "DELETE"],
            Route::FileDownload(_) => &["GET", "HEAD"],
            Route::TaskList => &["GET", "HEAD", "POST"],
            Route::TaskDetail(_) => &["GET", "HEAD"],
            Route::TaskCancel(_) => &["POST"],
            Route::ScheduleList => &["GET", "HEAD", "POST"],
            Route::ScheduleDetail(_) => &["GET", "HEAD", "PATCH", "DELETE"],
            Route::ObjectSetList => &["GET", "HEAD", "POST"],
            Route::ObjectSetDetail(_) => &["GET", "HEAD", "PATCH", "DELETE"],
            Route::PluginList => &["GET", "HEAD"],
            Route::PluginDetail(_) => &["GET", "HEAD"],
            Route::PluginEnable(_) | Route::PluginDisable(_) => &["POST"],
            Route::OrgList => &["GET", "HEAD"],
            Route::OrgDetail(_) => &["GET", "HEAD"],
        }
    }

    /// 405 unless the route answers `method`.
    pub(crate) fn check_method(&self, method: &Method) -> ApiResult<()> {
        if self.methods().contains(&method.as_str()) {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(method, self.methods()))
        }
    }
}

fn not_found(path_hint: &str) -> ApiError {
    ApiError::not_found(format!("No route for {path_hint}."))
}

/// Match a raw (still percent-encoded) path. Segments are split first and decoded after, so a key
/// may hold `/` as `%2F`. The trailing slash is optional.
pub(crate) fn match_path(raw_path: &str) -> ApiResult<Route> {
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
    let seg: Vec<String> = raw
        .iter()
        .map(|s| decode_segment(s))
        .collect::<ApiResult<_>>()?;
    let s: Vec<&str> = seg.iter().map(String::as_str).collect();
    let route = match s.as_slice() {
        ["schema"] => Route::Schema,
        ["objects"] => Route::ObjectsBulk,
        ["objects", ty] => Route::ObjectList(object_type(ty)?),
        ["objects", ty, key] => Route::ObjectDetail(object_type(ty)?, key.to_string()),
        ["objects", "hostname", key, "dnsrecord"] => Route::HostnameDnsRecords(key.to_string()),
        ["file" | "files"] => Route::FileList,
        ["file" | "files", id] => Route::FileDetail(id.to_string()),
        ["file" | "files", id, "download"] => Route::FileDownload(id.to_string()),
        ["tasks" | "task"] => Route::TaskList,
        ["tasks" | "task", id] => Route::TaskDetail(id.to_string()),
        ["tasks" | "task", id, "cancel"] => Route::TaskCancel(id.to_string()),
        ["schedules"] => Route::ScheduleList,
        ["schedules", id] => Route::ScheduleDetail(id.to_string()),
        ["object-sets"] => Route::ObjectSetList,
        ["object-sets", id] => Route::ObjectSetDetail(id.to_string()),
        ["plugins"] => Route::PluginList,
        ["plugins", id] => Route::PluginDetail(id.to_string()),
        ["plugins", id, "enable"] => Route::PluginEnable(id.to_string()),
        ["plugins", id, "disable"] => Route::PluginDisable(id.to_string()),
        ["organizations" | "organization"] => Route::OrgList,
        ["organizations" | "organization", code] => Route::OrgDetail(code.to_string()),
        _ => return Err(not_found("this path")),
    };
    Ok(route)
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
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert_eq!(
            match_path("/api/v1/objects/hostname/internet%7Ca.com/").unwrap(),
            Route::ObjectDetail(ObjectType::Hostname, "internet|a.com".into())
        );
        assert_eq!(
            match_path("/api/v1/objects/dnstxtrecord/internet|x.com||k%3Drsa%2Fp").unwrap(),
            Route::ObjectDetail(ObjectType::DnsTxtRecord, "internet|x.com||k=rsa/p".into())
        );
        assert_eq!(
            match_path("/api/v1/objects/hostname/internet|a.com/dnsrecord/").unwrap(),
            Route::HostnameDnsRecords("internet|a.com".into())
        );
        assert_eq!(
            match_path("/api/v1/files/3/download/").unwrap(),
            Route::FileDownload("3".into())
        );
        assert_eq!(match_path("/api/v1/objects/").unwrap(), Route::ObjectsBulk);
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
}
