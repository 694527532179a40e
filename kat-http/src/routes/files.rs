//! `/file/` (and `/files/`): streamed multipart uploads, lists, metadata, authenticated streamed
//! downloads, deletes.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use kat_core::store::{ByteStream, FileId, FileMeta, FileQuery, NewFile, Ordering};
use kat_core::task::TaskId;

use super::{Ctx, created, ok};
use crate::auth::ListScope;
use crate::body::{self, ApiBody, ReqBody};
use crate::error::{ApiError, ApiResult};
use crate::multipart::{self, MultipartReader};

/// A file's JSON: `file` is the absolute URL of its authenticated download route.
pub(crate) fn file_json(base: &str, m: &FileMeta) -> Value {
    json!({
        "id": m.id.0,
        "file": format!("{base}/api/v1/file/{}/download/", m.id),
        "type": m.file_type,
        "name": m.name,
        "size": m.size,
        "sha256": m.sha256,
        "task_id": m.task.map(|t| t.to_string()),
        "scan_level": m.scan_level.map(kat_core::object::ScanLevel::get),
        "scan_level_from": m.level_from.as_str(),
        "organization": m.org.as_str(),
        "created_at": m.created_at.to_string(),
    })
}

fn parse_id(raw: &str) -> ApiResult<FileId> {
    raw.parse::<FileId>().map_err(ApiError::from)
}

/// The file, if it exists in the caller's organization (another organization's is "not found").
async fn load(ctx: &Ctx<'_>, id: FileId) -> ApiResult<FileMeta> {
    match ctx.inner.files.meta(id).await? {
        Some(m) if m.org == *ctx.caller.org() => Ok(m),
        _ => Err(ApiError::not_found(format!("No file {id}."))),
    }
}

/// `GET /file/`.
pub(crate) async fn list(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[
        "type", "task_id", "id", "search", "ordering", "limit", "offset",
    ])?;
    let p = ctx.list_params()?;
    let scope = ctx.list_scope(&p)?;
    let mut q = FileQuery::new(ctx.caller.org().clone());
    q.file_type = ctx.query.one("type")?.map(str::to_string);
    q.task = ctx
        .query
        .one("task_id")?
        .map(|t| t.parse::<TaskId>().map_err(ApiError::from))
        .transpose()?;
    let ids = ctx.query.all("id");
    let mut ids: Option<Vec<FileId>> = if ids.is_empty() {
        None
    } else {
        Some(ids.iter().map(|s| parse_id(s)).collect::<ApiResult<_>>()?)
    };
    if let ListScope::Only(pks) = scope {
        ids = Some(match ids {
            Some(v) => v
                .into_iter()
                .filter(|i| pks.contains(&i.to_string()))
                .collect(),
            None => pks.iter().filter_map(|s| s.parse().ok()).collect(),
        });
    }
    q.ids = ids;
    q.search = p.search.clone();
    q.ordering = p.ordering.as_deref().map(Ordering::parse);
    q.limit = p.limit;
    q.offset = p.offset;
    q.validate()?;
    let page = ctx.inner.files.query(&q).await?;
    let base = ctx.base_url();
    let results = page.items.iter().map(|m| file_json(&base, m)).collect();
    Ok(ctx.page(&p, page.count, results))
}

/// `GET /file/<id>/`.
pub(crate) async fn retrieve(ctx: &mut Ctx<'_>, raw: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let id = parse_id(raw)?;
    ctx.require_pk(&id.to_string())?;
    let m = load(ctx, id).await?;
    Ok(ok(&file_json(&ctx.base_url(), &m)))
}

/// `GET /file/<id>/download/`: the contents, streamed, with `Content-Length`.
pub(crate) async fn download(ctx: &mut Ctx<'_>, raw: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let id = parse_id(raw)?;
    ctx.require_pk(&id.to_string())?;
    let m = load(ctx, id).await?;
    let stream = ctx.inner.files.open(id).await?;
    let body = StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync();
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(m.size));
    let safe_name: String = m
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe_name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"sha256:{}\"", m.sha256)) {
        h.insert(header::ETAG, v);
    }
    Ok(r)
}

/// `DELETE /file/<id>/`.
pub(crate) async fn destroy(ctx: &mut Ctx<'_>, raw: &str) -> ApiResult<Response<ApiBody>> {
    ctx.query.only(&[])?;
    let id = parse_id(raw)?;
    ctx.require_pk(&id.to_string())?;
    load(ctx, id).await?;
    if !ctx.inner.files.delete(id).await? {
        return Err(ApiError::not_found(format!("No file {id}.")));
    }
    Ok(body::no_content())
}

/// Why an upload stream stopped early, for the response (the store only sees an I/O error).
type StopReason = Arc<std::sync::Mutex<Option<ApiError>>>;

fn record(reason: &StopReason, e: ApiError) -> std::io::Error {
    let msg = e.detail.clone();
    if let Ok(mut g) = reason.lock() {
        g.get_or_insert(e);
    }
    std::io::Error::other(msg)
}

fn taken(reason: &StopReason) -> Option<ApiError> {
    reason.lock().ok().and_then(|mut g| g.take())
}

/// The current part's data as a [`ByteStream`], counting bytes against the upload limit.
fn part_stream(reader: Arc<Mutex<MultipartReader>>, limit: u64, reason: StopReason) -> ByteStream {
    let s = futures::stream::unfold(
        (reader, 0u64, reason, false),
        move |(reader, seen, reason, done)| async move {
            if done {
                return None;
            }
            let next = reader.lock().await.next_chunk().await;
            match next {
                Ok(Some(chunk)) => {
                    let seen = seen + chunk.len() as u64;
                    if seen > limit {
                        let e = record(&reason, too_large(limit));
                        return Some((Err(e), (reader, seen, reason, true)));
                    }
                    Some((Ok(chunk), (reader, seen, reason, false)))
                }
                Ok(None) => {
                    // The file's data is complete; the store commits it when this stream ends, so
                    // the rest of the body is read and checked first: a bad end stores nothing.
                    let rest = rest_after_file(&mut *reader.lock().await).await;
                    match rest {
                        Ok(()) => None,
                        Err(e) => {
                            let e = record(&reason, e);
                            Some((Err(e), (reader, seen, reason, true)))
                        }
                    }
                }
                Err(e) => {
                    let e = record(&reason, e);
                    Some((Err(e), (reader, seen, reason, true)))
                }
            }
        },
    );
    Box::pin(s)
}

/// A part the form cannot have once `type` and `file` were both given: each is a 400.
fn unexpected_part(name: &str, type_given: bool, file_given: bool) -> Option<ApiError> {
    match name {
        "type" if type_given => Some(ApiError::invalid("type", "type may be given once")),
        "type" => None,
        "file" if file_given => Some(ApiError::invalid("file", "one file per upload")),
        "file" => None,
        other => Some(ApiError::invalid(
            other,
            format!("unknown form field {other:?}; send \"file\" and optionally \"type\""),
        )),
    }
}

/// Read the rest of a body whose `type` and `file` were both given: only the closing delimiter (and
/// an epilogue) may follow.
async fn rest_after_file(reader: &mut MultipartReader) -> ApiResult<()> {
    if let Some(part) = reader.next_part().await? {
        return Err(unexpected_part(&part.name, true, true)
            .unwrap_or_else(|| ApiError::invalid(&part.name, "unexpected form field")));
    }
    reader.finish().await
}

fn too_large(limit: u64) -> ApiError {
    ApiError::too_large(format!("the file is larger than {limit} bytes"))
}

/// A spooled upload on disk, removed when dropped.
struct Spool {
    path: std::path::PathBuf,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn default_type(name: &str) -> String {
    name.rsplit_once('.')
        .map(|(_, ext)| ext)
        .filter(|e| kat_core::plugin::check_file_type(e).is_ok())
        .unwrap_or("file")
        .to_string()
}

/// The stored name of an uploaded file: the last path component of its `filename`; `file` when that
/// is empty, `.` or `..`.
fn file_name(filename: Option<&str>) -> String {
    let raw = filename.unwrap_or("");
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    if base.is_empty() || base == "." || base == ".." {
        "file".to_string()
    } else {
        base.to_string()
    }
}

/// Whether the caller may upload a file of type `t`: a task only of its own plugin's id or `error`;
/// nobody of the engine's own types.
fn check_upload_type(ctx: &Ctx<'_>, t: &str) -> ApiResult<()> {
    if t == kat_core::engine::STDIN_FILE_TYPE {
        return Err(ApiError::permission_denied(format!(
            "files of type {t:?} are the engine's own; no token may upload one"
        )));
    }
    if ctx.caller.task().is_some() {
        let own = ctx.caller.claims.plugin_id.as_deref();
        let error = kat_core::engine::ERROR_FILE_TYPE;
        if Some(t) != own && t != error {
            return Err(ApiError::permission_denied(match own {
                Some(own) => format!(
                    "a task of plugin {own} may upload files of type {own:?} or {error:?}, not {t:?}"
                ),
                None => format!("this task may upload files of type {error:?} only, not {t:?}"),
            }));
        }
    }
    Ok(())
}

/// The scan level a new file carries (see `kat_core::chain`): a task's upload the level of the
/// task's inputs (a `scan_level` parameter is refused); an operator's the `scan_level` they state
/// (required, 0 to 4).
async fn upload_level(
    ctx: &Ctx<'_>,
) -> ApiResult<(
    Option<kat_core::object::ScanLevel>,
    kat_core::store::LevelSource,
)> {
    let stated = ctx.query.one("scan_level")?;
    let Some(task) = ctx.caller.task() else {
        let raw = stated.ok_or_else(|| {
            ApiError::invalid(
                "scan_level",
                "an upload without a task states the scan level its contents carry: ?scan_level=0 to 4",
            )
        })?;
        let level = raw
            .parse::<u8>()
            .map_err(|_| {
                ApiError::invalid(
                    "scan_level",
                    format!("scan level must be 0 to 4, got {raw:?}"),
                )
            })
            .and_then(|n| kat_core::object::ScanLevel::new(n).map_err(ApiError::from))?;
        return Ok((Some(level), kat_core::store::LevelSource::Operator));
    };
    if stated.is_some() {
        return Err(ApiError::invalid(
            "scan_level",
            "the scan level of a task's file comes from the task's inputs, not from a parameter",
        ));
    }
    let inner = ctx.inner;
    // The objects' levels as of this mark (read before them: a write while they are read changes
    // it, and the next upload reads them again).
    let mark = inner.objects.change_mark(ctx.caller.org());
    let cached = inner
        .output_levels
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&task)
        .filter(|(at, _)| Some(*at) == mark)
        .map(|(_, level)| *level);
    if let Some(level) = cached {
        return Ok(level);
    }
    match inner.tasks.get_task(task).await? {
        Some(t) => {
            let level = kat_core::chain::level_of_output(
                inner.objects.as_ref(),
                inner.files.as_ref(),
                inner.tasks.as_ref(),
                &t,
            )
            .await?;
            // Only a level read from objects: that of input files is the files' own.
            if let Some(at) = mark
                && t.input.files.is_empty()
            {
                let mut levels = inner
                    .output_levels
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if levels.len() >= OUTPUT_LEVELS_KEPT {
                    levels.clear();
                }
                levels.insert(task, (at, level));
            }
            Ok(level)
        }
        None => Ok((None, kat_core::store::LevelSource::Unrecorded)),
    }
}

/// Tasks whose output level [`upload_level`] keeps at most (beyond, it forgets them all).
const OUTPUT_LEVELS_KEPT: usize = 4096;

/// `POST /file/`: multipart with a `file` part and an optional `type` field (before or after it).
/// The file is streamed into the store frame by frame; org and task come from the token; a task
/// uploads only files of its plugin's type (or `error`), and the file carries the scan level of its
/// chain (an operator states it: `?scan_level=`).
///
/// All or nothing: the file is committed (visible, and chained through
/// [`TaskControl::file_stored`](kat_core::control::TaskControl::file_stored)) only once the whole
/// body has been read and checked. With `type` first, the store's stream ends only after the rest of
/// the body was validated, and a bad rest is a stream error, which stores nothing; with `type` after
/// the file (or none), the file is spooled and stored once the body is complete.
pub(crate) async fn upload(ctx: &mut Ctx<'_>) -> ApiResult<Response<ApiBody>> {
    if ctx.query.pairs().iter().any(|(k, _)| k == "task_id") {
        return Err(ApiError::invalid(
            "task_id",
            "the task of an upload comes from the token, not from a query parameter",
        ));
    }
    ctx.query.only(&["scan_level"])?;
    ctx.require_create()?;
    let boundary = multipart::boundary(ctx.headers.get(header::CONTENT_TYPE))?;
    let (scan_level, level_from) = upload_level(ctx).await?;
    let limit = ctx.inner.config.max_upload;
    if let Some(n) = body::content_length(&ctx.headers)?
        && n > limit.saturating_add(64 * 1024)
    {
        return Err(too_large(limit));
    }
    let req_body: ReqBody = ctx.take_body();
    let reader = Arc::new(Mutex::new(MultipartReader::new(req_body, &boundary)));
    let org = ctx.caller.org().clone();
    let task = ctx.caller.task();
    let mut file_type: Option<String> = None;
    let mut stored: Option<FileMeta> = None;
    let mut spooled: Option<(Spool, String)> = None;
    loop {
        let part = reader.lock().await.next_part().await?;
        let Some(part) = part else { break };
        if let Some(e) = unexpected_part(
            &part.name,
            file_type.is_some(),
            stored.is_some() || spooled.is_some(),
        ) {
            return Err(e);
        }
        match part.name.as_str() {
            "type" => {
                let t = reader.lock().await.read_text("type", 256).await?;
                let t = t.trim().to_string();
                kat_core::plugin::check_file_type(&t).map_err(|m| ApiError::invalid("type", m))?;
                check_upload_type(ctx, &t)?;
                file_type = Some(t);
            }
            _ => {
                // "file": `unexpected_part` refused every other name.
                let name = file_name(part.filename.as_deref());
                match &file_type {
                    Some(t) => {
                        let new = NewFile {
                            org: org.clone(),
                            file_type: t.clone(),
                            name,
                            task,
                            scan_level,
                            level_from,
                        };
                        stored = Some(put_streaming(ctx, new, reader.clone(), limit).await?);
                    }
                    None => {
                        let spool = spool_part(ctx, &reader, limit).await?;
                        spooled = Some((spool, name));
                    }
                }
            }
        }
    }
    reader.lock().await.finish().await?;
    let meta = match (stored, spooled) {
        (Some(m), _) => m,
        (None, Some((spool, name))) => {
            // A task's file without a type is of its plugin's type.
            let file_type = file_type.unwrap_or_else(|| match &ctx.caller.claims.plugin_id {
                Some(own) if task.is_some() => own.clone(),
                _ => default_type(&name),
            });
            check_upload_type(ctx, &file_type)?;
            let new = NewFile {
                org,
                file_type,
                name,
                task,
                scan_level,
                level_from,
            };
            let f = tokio::fs::File::open(&spool.path).await?;
            let stream: ByteStream =
                Box::pin(tokio_util::io::ReaderStream::with_capacity(f, 64 * 1024));
            let m = ctx.inner.files.put(new, stream).await?;
            drop(spool);
            m
        }
        (None, None) => {
            return Err(ApiError::invalid("file", "the \"file\" part is required"));
        }
    };
    // The file is stored; a retried upload would store it twice. Report a chaining failure, do
    // not fail the upload.
    if let Some(control) = &ctx.inner.control
        && let Err(e) = control.file_stored(&meta).await
    {
        tracing::error!(file = %meta.id, error = %e, "chaining after a stored file failed");
    }
    Ok(created(&file_json(&ctx.base_url(), &meta)))
}

async fn put_streaming(
    ctx: &Ctx<'_>,
    new: NewFile,
    reader: Arc<Mutex<MultipartReader>>,
    limit: u64,
) -> ApiResult<FileMeta> {
    let reason: StopReason = Arc::default();
    let stream = part_stream(reader, limit, reason.clone());
    match ctx.inner.files.put(new, stream).await {
        Ok(m) => Ok(m),
        Err(e) => Err(taken(&reason).unwrap_or_else(|| ApiError::from(e))),
    }
}

async fn spool_part(
    ctx: &Ctx<'_>,
    reader: &Arc<Mutex<MultipartReader>>,
    limit: u64,
) -> ApiResult<Spool> {
    let dir = ctx
        .inner
        .config
        .spool_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let spool = Spool {
        path: dir.join(format!(
            "{}{}",
            crate::server::SPOOL_PREFIX,
            uuid::Uuid::new_v4()
        )),
    };
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&spool.path)
        .await?;
    let mut seen = 0u64;
    loop {
        let chunk: Option<Bytes> = reader.lock().await.next_chunk().await?;
        let Some(chunk) = chunk else { break };
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(too_large(limit));
        }
        f.write_all(&chunk).await?;
    }
    f.flush().await?;
    Ok(spool)
}
