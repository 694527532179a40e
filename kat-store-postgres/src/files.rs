//! [`FileStore`] on PostgreSQL: file contents in the database, content-addressed and streamed both
//! ways (tables in `migrations/0002_files.sql`).
//!
//! An upload runs in one transaction. It adds a pending `file_contents` row (no sha256 yet) and
//! writes the body into `file_chunks` of [`CHUNK`] bytes as it arrives, hashing it on the way, so
//! memory holds one chunk whatever the file's size. At the end, under an advisory lock on the
//! hash (uploads of the same content take turns), a content with the same sha256 that is already
//! stored gains a reference and the pending one is deleted; otherwise the pending row becomes that
//! content. Then the `files` row is added and the transaction commits. A failing body, or an
//! upload dropped half-way, rolls the transaction back: nothing is stored.
//!
//! Reading fetches [`READ_SLICE`] bytes per query (a `substring` of a chunk: with the chunks stored
//! uncompressed, PostgreSQL reads only that part), each on a pooled connection taken for that
//! query only, so a slow reader holds no connection, and no connection's buffers grow past a slice. A file deleted while it is read ends its
//! stream with an error rather than short.
//!
//! A delete removes the `files` row and drops a reference from its content, deleting the content
//! (and its chunks) with the last reference, in one transaction. The content row's lock orders a
//! delete and an upload of the same content: the upload either adds its reference before the
//! delete (which then keeps the content) or finds the content gone and keeps its own.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use kat_core::clock::Timestamp;
use kat_core::object::ScanLevel;
use kat_core::org::OrgCode;
use kat_core::store::{
    ByteStream, FileId, FileMeta, FileQuery, FileStore, LevelSource, NewFile, Page,
};
use kat_core::task::TaskId;
use sha2::{Digest, Sha256};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::{PResult, PgStore, PgStoreError};

/// Bytes per stored chunk (the last chunk of a file may be shorter).
pub(crate) const CHUNK: usize = 1 << 20;

/// Bytes fetched per query when reading a file back (a divisor of [`CHUNK`]). Small on purpose:
/// each pooled connection keeps a read buffer as large as the largest message it received, so
/// with 1 MiB messages a pool of 16 would keep ~50 MiB once every connection served a read.
pub(crate) const READ_SLICE: usize = 256 << 10;

/// The columns [`meta_from_row`] reads, in its order.
const META_COLUMNS: &str =
    "id, org, file_type, name, size, sha256, task, created_at, scan_level, level_from";

/// The advisory-lock key of a content hash: its first eight bytes.
fn hash_lock(sha256: &str) -> i64 {
    let mut b = [0u8; 8];
    if let Ok(bytes) = hex::decode(sha256.get(..16).unwrap_or_default()) {
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
    }
    i64::from_be_bytes(b)
}

/// A file id as the database's `bigint`; `None` for ids no file can have.
fn db_id(id: FileId) -> Option<i64> {
    i64::try_from(id.0).ok()
}

fn level_from_text(s: &str) -> PResult<LevelSource> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|e| PgStoreError::decode("file level source", e))
}

fn meta_from_row(row: &Row) -> PResult<FileMeta> {
    let id: i64 = row.try_get(0)?;
    let org: String = row.try_get(1)?;
    let size: i64 = row.try_get(4)?;
    let task: Option<uuid::Uuid> = row.try_get(6)?;
    let level: Option<i16> = row.try_get(8)?;
    let level_from: String = row.try_get(9)?;
    let scan_level = level
        .map(|l| {
            u8::try_from(l)
                .map_err(|e| PgStoreError::decode("file scan level", e))
                .and_then(|l| {
                    ScanLevel::new(l).map_err(|e| PgStoreError::decode("file scan level", e))
                })
        })
        .transpose()?;
    Ok(FileMeta {
        id: FileId(u64::try_from(id).map_err(|e| PgStoreError::decode("file id", e))?),
        org: OrgCode::new(&org).map_err(|e| PgStoreError::decode("file organization", e))?,
        file_type: row.try_get(2)?,
        name: row.try_get(3)?,
        size: u64::try_from(size).map_err(|e| PgStoreError::decode("file size", e))?,
        sha256: row.try_get(5)?,
        task: task.map(TaskId),
        created_at: Timestamp::from_millis(row.try_get(7)?),
        scan_level,
        level_from: level_from_text(&level_from)?,
    })
}

impl PgStore {
    /// Store a file, streaming its body into chunks inside one transaction.
    async fn put_file(&self, new: NewFile, mut body: ByteStream) -> PResult<FileMeta> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let pending: i64 = tx
            .query_one(
                "INSERT INTO file_contents (sha256, size, chunks, refs) VALUES (NULL, 0, 0, 1) \
                 RETURNING id",
                &[],
            )
            .await?
            .try_get(0)?;
        let insert = tx
            .prepare("INSERT INTO file_chunks (content, seq, data) VALUES ($1, $2, $3)")
            .await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut seq = 0i32;
        let mut buf = BytesMut::with_capacity(CHUNK);
        while let Some(piece) = body.next().await {
            // An error drops the transaction, which rolls back everything written so far.
            let piece = piece.map_err(PgStoreError::Body)?;
            hasher.update(&piece);
            size += piece.len() as u64;
            let mut rest = &piece[..];
            while !rest.is_empty() {
                let take = (CHUNK - buf.len()).min(rest.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buf.len() == CHUNK {
                    tx.execute(&insert, &[&pending, &seq, &&buf[..]]).await?;
                    seq += 1;
                    buf.clear();
                }
            }
        }
        if !buf.is_empty() {
            tx.execute(&insert, &[&pending, &seq, &&buf[..]]).await?;
            seq += 1;
        }
        drop(buf);
        let sha256 = hex::encode(hasher.finalize());
        let size_db = i64::try_from(size).map_err(|e| PgStoreError::decode("file size", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&hash_lock(&sha256)])
            .await?;
        let existing = tx
            .query_opt(
                "UPDATE file_contents SET refs = refs + 1 WHERE sha256 = $1 RETURNING id",
                &[&sha256],
            )
            .await?;
        let content: i64 = match existing {
            Some(row) => {
                // Stored already: keep that copy, drop this one (its chunks go with it).
                tx.execute("DELETE FROM file_contents WHERE id = $1", &[&pending])
                    .await?;
                row.try_get(0)?
            }
            None => {
                tx.execute(
                    "UPDATE file_contents SET sha256 = $2, size = $3, chunks = $4 WHERE id = $1",
                    &[&pending, &sha256, &size_db, &seq],
                )
                .await?;
                pending
            }
        };
        let created_at = Timestamp::now();
        let level: Option<i16> = new.scan_level.map(|l| i16::from(l.get()));
        let level_from = new.level_from.as_str();
        let task = new.task.map(|t| t.0);
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO files (org, file_type, name, size, sha256, content, task, \
                     created_at, scan_level, level_from) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {META_COLUMNS}"
                ),
                &[
                    &new.org.as_str(),
                    &new.file_type,
                    &new.name,
                    &size_db,
                    &sha256,
                    &content,
                    &task,
                    &created_at.as_millis(),
                    &level,
                    &level_from,
                ],
            )
            .await?;
        let meta = meta_from_row(&row)?;
        tx.commit().await?;
        tracing::debug!(id = %meta.id, size, deduplicated = content != pending, "stored a file");
        Ok(meta)
    }

    async fn file_meta(&self, id: FileId) -> PResult<Option<FileMeta>> {
        let Some(id) = db_id(id) else {
            return Ok(None);
        };
        let c = self.conn().await?;
        c.query_opt(
            &format!("SELECT {META_COLUMNS} FROM files WHERE id = $1"),
            &[&id],
        )
        .await?
        .map(|r| meta_from_row(&r))
        .transpose()
    }

    /// The content id and size of a file.
    async fn file_content(&self, id: FileId) -> PResult<Option<(i64, i64)>> {
        let Some(id) = db_id(id) else {
            return Ok(None);
        };
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT c.id, c.size FROM files f JOIN file_contents c ON c.id = f.content \
                 WHERE f.id = $1",
                &[&id],
            )
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// The [`READ_SLICE`] bytes of a content from `pos` (fewer at its end; `pos` is a multiple of
    /// [`READ_SLICE`], so a slice never spans two chunks).
    async fn read_slice(&self, content: i64, pos: i64, size: i64) -> PResult<Bytes> {
        let chunk = CHUNK as i64;
        let seq = i32::try_from(pos / chunk).map_err(|e| PgStoreError::decode("file chunk", e))?;
        let len = (READ_SLICE as i64).min(size - pos);
        // Both below CHUNK: they fit substring's integer arguments.
        let (from_db, len_db) = ((pos % chunk + 1) as i32, len as i32);
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT substring(data FROM $3 FOR $4) FROM file_chunks \
                 WHERE content = $1 AND seq = $2",
                &[&content, &seq, &from_db, &len_db],
            )
            .await?;
        let data: Option<&[u8]> = row.as_ref().map(|r| r.try_get(0)).transpose()?;
        match data {
            Some(d) if d.len() as i64 == len => Ok(Bytes::copy_from_slice(d)),
            _ => Err(PgStoreError::decode(
                "file contents",
                format!(
                    "chunk {seq} of content {content} is missing or short \
                     (was the file deleted while it was read?)"
                ),
            )),
        }
    }

    async fn query_files(&self, q: &FileQuery) -> PResult<Page<FileMeta>> {
        let ids: Option<Vec<i64>> = q
            .ids
            .as_ref()
            .map(|ids| ids.iter().filter_map(|id| db_id(*id)).collect());
        let search = q.search.as_ref().map(|s| s.to_lowercase());
        let task = q.task.map(|t| t.0);
        let org = q.org.as_str();
        let filter = "org = $1 AND ($2::text IS NULL OR file_type = $2) \
             AND ($3::uuid IS NULL OR task = $3) AND ($4::bigint[] IS NULL OR id = ANY($4)) \
             AND ($5::text IS NULL OR strpos(lower(file_type), $5) > 0 \
                  OR strpos(lower(name), $5) > 0)";
        let params: [&(dyn ToSql + Sync); 5] = [&org, &q.file_type, &task, &ids, &search];
        let (field, desc) = q
            .ordering
            .as_ref()
            .map_or(("id", false), |o| (o.field.as_str(), o.descending));
        let column = match field {
            "created_at" => "created_at",
            "type" => "file_type COLLATE \"C\"",
            "name" => "name COLLATE \"C\"",
            "size" => "size",
            _ => "id",
        };
        let dir = if desc { "DESC" } else { "ASC" };
        let order = if column == "id" {
            format!("id {dir}")
        } else {
            format!("{column} {dir}, id {dir}")
        };
        let limit: Option<i64> = (q.limit > 0).then(|| i64::try_from(q.limit).unwrap_or(i64::MAX));
        let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
        let c = self.conn().await?;
        let count: i64 = c
            .query_one(
                &format!("SELECT count(*) FROM files WHERE {filter}"),
                &params,
            )
            .await?
            .try_get(0)?;
        let mut all: Vec<&(dyn ToSql + Sync)> = params.to_vec();
        all.push(&limit);
        all.push(&offset);
        let rows = c
            .query(
                &format!(
                    "SELECT {META_COLUMNS} FROM files WHERE {filter} ORDER BY {order} \
                     LIMIT $6 OFFSET $7"
                ),
                &all,
            )
            .await?;
        let items = rows
            .iter()
            .map(meta_from_row)
            .collect::<PResult<Vec<_>>>()?;
        Ok(Page {
            count: u64::try_from(count).unwrap_or(0),
            items,
        })
    }

    async fn delete_file(&self, id: FileId) -> PResult<bool> {
        let Some(id) = db_id(id) else {
            return Ok(false);
        };
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let Some(row) = tx
            .query_opt("DELETE FROM files WHERE id = $1 RETURNING content", &[&id])
            .await?
        else {
            tx.rollback().await?;
            return Ok(false);
        };
        let content: i64 = row.try_get(0)?;
        let refs: Option<i64> = tx
            .query_opt(
                "UPDATE file_contents SET refs = refs - 1 WHERE id = $1 RETURNING refs",
                &[&content],
            )
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        if refs.is_some_and(|r| r <= 0) {
            tx.execute("DELETE FROM file_contents WHERE id = $1", &[&content])
                .await?;
        }
        tx.commit().await?;
        tracing::debug!(id, last = refs.is_some_and(|r| r <= 0), "deleted a file");
        Ok(true)
    }
}

/// Where a reader is in a file.
struct Reader {
    store: PgStore,
    content: i64,
    pos: i64,
    size: i64,
    failed: bool,
}

async fn next_slice(mut r: Reader) -> Option<(std::io::Result<Bytes>, Reader)> {
    if r.failed || r.pos >= r.size {
        return None;
    }
    match r.store.read_slice(r.content, r.pos, r.size).await {
        Ok(b) => {
            r.pos += b.len() as i64;
            Some((Ok(b), r))
        }
        Err(e) => {
            r.failed = true;
            Some((Err(std::io::Error::other(e)), r))
        }
    }
}

#[async_trait]
impl FileStore for PgStore {
    async fn put_valid(&self, new: NewFile, body: ByteStream) -> kat_core::Result<FileMeta> {
        Ok(self.put_file(new, body).await?)
    }

    async fn meta(&self, id: FileId) -> kat_core::Result<Option<FileMeta>> {
        Ok(self.file_meta(id).await?)
    }

    async fn open(&self, id: FileId) -> kat_core::Result<ByteStream> {
        let (content, size) = self
            .file_content(id)
            .await?
            .ok_or_else(|| kat_core::Error::not_found("file", id.to_string()))?;
        let reader = Reader {
            store: self.clone(),
            content,
            pos: 0,
            size,
            failed: false,
        };
        Ok(Box::pin(futures::stream::unfold(reader, next_slice)))
    }

    async fn query_valid(&self, query: &FileQuery) -> kat_core::Result<Page<FileMeta>> {
        Ok(self.query_files(query).await?)
    }

    async fn delete(&self, id: FileId) -> kat_core::Result<bool> {
        Ok(self.delete_file(id).await?)
    }
}
