//! [`FileStore`]: contents in a content-addressed directory, metadata and indexes in the `files` tree.
//!
//! An upload up to 256 KiB (a plugin's output, mostly) is received in memory, then written to
//! `files/tmp/<n>.tmp`, fsynced, committed and the database flushed in one call on the blocking
//! pool; a larger one streams into `files/tmp/<n>.tmp` while it is hashed (memory stays at one
//! chunk past the first 256 KiB). Either is fsynced (with [`Durability::FlushEachWrite`]), then
//! renamed to `files/<aa>/<sha256>`; identical
//! contents are stored once and reference-counted. A failing stream, or an upload dropped half-way,
//! removes its temporary file and stores nothing.
//!
//! Key layout of the `files` tree (`id` is a big-endian `u64`, so ids sort numerically):
//!
//! | key | value | what |
//! | --- | --- | --- |
//! | `c` | `u64` | the next file id (ids only increase, also across restarts) |
//! | `m` id | JSON [`FileMeta`] | the metadata (records without `scan_level` and `level_from`, written before files carried a level, read as carrying none, [`LevelSource::Unrecorded`](kat_core::store::LevelSource::Unrecorded)) |
//! | `o` org id | empty | files of an organization |
//! | `y` org type id | empty | files of a type |
//! | `k` org task id | empty | files a task produced |
//! | `r` sha256 | `u64` | how many files have this content |

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt;
use kat_core::Result;
use kat_core::clock::Timestamp;
use kat_core::org::OrgCode;
use kat_core::store::{ByteStream, FileId, FileMeta, FileQuery, FileStore, NewFile, Page};
use kat_core::task::TaskId;
use sha2::{Digest, Sha256};
use sled::IVec;
use tokio::io::AsyncWriteExt;

use crate::error::{SResult, SledStoreError};
use crate::keys::{Key, take_u64, u64_value};
use crate::{Durability, Inner, SledStore, from_json, lock, to_json};

const T_COUNTER: u8 = b'c';
const T_META: u8 = b'm';
const T_ORG: u8 = b'o';
const T_TYPE: u8 = b'y';
const T_TASK: u8 = b'k';
const T_REFS: u8 = b'r';

/// Bytes per chunk when reading a file back.
const READ_CHUNK: usize = 64 * 1024;

fn meta_key(id: FileId) -> Key {
    Key::new(T_META).u64(id.0)
}

fn org_prefix(org: &OrgCode) -> Key {
    Key::new(T_ORG).str(org.as_str())
}

fn type_prefix(org: &OrgCode, ty: &str) -> Key {
    Key::new(T_TYPE).str(org.as_str()).str(ty)
}

fn task_prefix(org: &OrgCode, task: TaskId) -> Key {
    Key::new(T_TASK).str(org.as_str()).id(task.0.as_bytes())
}

fn refs_key(sha256: &str) -> Key {
    Key::new(T_REFS).str(sha256)
}

fn index_keys(m: &FileMeta) -> Vec<Vec<u8>> {
    let mut v = vec![
        org_prefix(&m.org).u64(m.id.0).into_vec(),
        type_prefix(&m.org, &m.file_type).u64(m.id.0).into_vec(),
    ];
    if let Some(t) = m.task {
        v.push(task_prefix(&m.org, t).u64(m.id.0).into_vec());
    }
    v
}

pub(crate) fn blob_path(blob_dir: &Path, sha256: &str) -> PathBuf {
    blob_dir.join(&sha256[..2]).join(sha256)
}

fn load_meta(inner: &Inner, id: FileId) -> SResult<Option<FileMeta>> {
    inner
        .files
        .get(meta_key(id))?
        .map(|v| from_json("file metadata", &v))
        .transpose()
}

/// A temporary upload, removed when dropped unless it was moved into place.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> Option<&Path> {
        self.0.as_deref()
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = std::fs::remove_file(&p)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "cannot remove a temporary upload");
        }
    }
}

/// Uploads of at most this many bytes are received in memory, then written and committed in one
/// blocking call ([`put_small`]); larger ones stream to disk as they arrive.
const SMALL_FILE: usize = 256 * 1024;

/// A file whose whole content is in `chunks`: write it to a temporary file, sync it, commit it
/// ([`commit_upload`]) and, with [`Durability::FlushEachWrite`], flush the database, all on the
/// calling thread (one hop to the blocking pool for the whole upload instead of one per step).
fn put_small(inner: &Inner, new: NewFile, chunks: &[bytes::Bytes]) -> SResult<FileMeta> {
    use std::io::Write;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    for chunk in chunks {
        hasher.update(chunk);
        size += chunk.len() as u64;
    }
    let sha256 = hex::encode(hasher.finalize());
    // Contents stored before (a scan whose output did not change): no temporary file to write
    // and sync, only the metadata.
    let meta = match commit_existing(inner, new, size, &sha256)? {
        Ok(meta) => meta,
        Err(new) => {
            let n = inner.db.generate_id()?;
            let path = inner.tmp_dir.join(format!("{n}.tmp"));
            let temp = TempFile(Some(path.clone()));
            let ctx = |what: &str| format!("{what} {}", path.display());
            let mut file =
                std::fs::File::create(&path).map_err(|e| SledStoreError::io(ctx("creating"), e))?;
            for chunk in chunks {
                file.write_all(chunk)
                    .map_err(|e| SledStoreError::io(ctx("writing"), e))?;
            }
            if inner.durability == Durability::FlushEachWrite {
                file.sync_all()
                    .map_err(|e| SledStoreError::io(ctx("syncing"), e))?;
            }
            drop(file);
            commit_upload(inner, temp, new, size, sha256)?
        }
    };
    if inner.durability == Durability::FlushEachWrite {
        inner.db.flush()?;
    }
    Ok(meta)
}

impl SledStore {
    /// A file larger than [`SMALL_FILE`]: `head` (what was received so far), then the rest of
    /// `body`, streamed to a temporary file, then committed.
    async fn put_streaming(
        &self,
        new: NewFile,
        head: Vec<bytes::Bytes>,
        body: ByteStream,
    ) -> Result<FileMeta> {
        let n = self.inner.db.generate_id().map_err(SledStoreError::from)?;
        let path = self.inner.tmp_dir.join(format!("{n}.tmp"));
        let temp = TempFile(Some(path.clone()));
        let ctx = |what: &str| format!("{what} {}", path.display());
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| SledStoreError::io(ctx("creating"), e))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut rest = futures::stream::iter(head.into_iter().map(Ok)).chain(body);
        while let Some(chunk) = rest.next().await {
            // A failing stream drops `temp`, which removes the partial upload.
            let chunk = chunk?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(|e| SledStoreError::io(ctx("writing"), e))?;
        }
        file.flush()
            .await
            .map_err(|e| SledStoreError::io(ctx("writing"), e))?;
        if self.inner.durability == Durability::FlushEachWrite {
            file.sync_all()
                .await
                .map_err(|e| SledStoreError::io(ctx("syncing"), e))?;
        }
        drop(file);
        let sha256 = hex::encode(hasher.finalize());
        let meta = self
            .blocking(move |inner| commit_upload(inner, temp, new, size, sha256))
            .await?;
        self.written().await?;
        Ok(meta)
    }
}

fn sync_dir(dir: &Path) -> SResult<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SledStoreError::io(format!("syncing {}", dir.display()), e))
}

/// Move a complete upload into its content address and record its metadata, atomically.
fn commit_upload(
    inner: &Inner,
    mut temp: TempFile,
    new: NewFile,
    size: u64,
    sha256: String,
) -> SResult<FileMeta> {
    let blob = blob_path(&inner.blob_dir, &sha256);
    let parent = blob.parent().unwrap_or(&inner.blob_dir).to_path_buf();
    let _writer = lock(&inner.file_lock);
    std::fs::create_dir_all(&parent)
        .map_err(|e| SledStoreError::io(format!("creating {}", parent.display()), e))?;
    let reuse = std::fs::metadata(&blob).is_ok_and(|m| m.is_file() && m.len() == size);
    if !reuse {
        let from = temp.path().map(Path::to_path_buf).unwrap_or_default();
        std::fs::rename(&from, &blob).map_err(|e| {
            SledStoreError::io(
                format!("moving {} to {}", from.display(), blob.display()),
                e,
            )
        })?;
        temp.disarm();
        if inner.durability == Durability::FlushEachWrite {
            sync_dir(&parent)?;
        }
    }
    drop(temp);
    record_meta(inner, new, size, sha256)
}

/// When contents with `sha256` and `size` are stored already, record a new file of them (its
/// metadata, indexes and one more reference) and return it; otherwise hand `new` back.
fn commit_existing(
    inner: &Inner,
    new: NewFile,
    size: u64,
    sha256: &str,
) -> SResult<std::result::Result<FileMeta, NewFile>> {
    let blob = blob_path(&inner.blob_dir, sha256);
    let _writer = lock(&inner.file_lock);
    // The reference count, not only the blob: a blob whose last file is being deleted may still
    // be on disk for a moment, but its count is gone.
    let counted = inner.files.contains_key(refs_key(sha256))?;
    if counted && std::fs::metadata(&blob).is_ok_and(|m| m.is_file() && m.len() == size) {
        return Ok(Ok(record_meta(inner, new, size, sha256.to_owned())?));
    }
    Ok(Err(new))
}

/// Record a file whose contents are at their content address (the caller holds the file lock).
fn record_meta(inner: &Inner, new: NewFile, size: u64, sha256: String) -> SResult<FileMeta> {
    let id = match inner.files.get([T_COUNTER])? {
        Some(v) => {
            u64_value(&v).ok_or_else(|| SledStoreError::decode("file id counter", "not a u64"))?
        }
        None => 1,
    };
    let refs = match inner.files.get(refs_key(&sha256))? {
        Some(v) => u64_value(&v)
            .ok_or_else(|| SledStoreError::decode("blob reference count", "not a u64"))?,
        None => 0,
    };
    let meta = FileMeta {
        id: FileId(id),
        org: new.org,
        file_type: new.file_type,
        name: new.name,
        size,
        sha256,
        task: new.task,
        created_at: Timestamp::now(),
        scan_level: new.scan_level,
        level_from: new.level_from,
    };
    let mut batch = sled::Batch::default();
    batch.insert(&[T_COUNTER][..], &(id + 1).to_be_bytes()[..]);
    batch.insert(
        meta_key(meta.id).into_vec(),
        to_json("file metadata", &meta)?,
    );
    for k in index_keys(&meta) {
        batch.insert(k, IVec::default());
    }
    batch.insert(
        refs_key(&meta.sha256).into_vec(),
        &(refs + 1).to_be_bytes()[..],
    );
    inner.files.apply_batch(batch)?;
    Ok(meta)
}

fn delete_blocking(inner: &Inner, id: FileId) -> SResult<bool> {
    let _writer = lock(&inner.file_lock);
    let Some(meta) = load_meta(inner, id)? else {
        return Ok(false);
    };
    let rk = refs_key(&meta.sha256).into_vec();
    let refs = match inner.files.get(&rk)? {
        Some(v) => u64_value(&v)
            .ok_or_else(|| SledStoreError::decode("blob reference count", "not a u64"))?,
        None => 0,
    };
    let mut batch = sled::Batch::default();
    batch.remove(meta_key(id).into_vec());
    for k in index_keys(&meta) {
        batch.remove(k);
    }
    let last = refs <= 1;
    if last {
        batch.remove(rk);
    } else {
        batch.insert(rk, &(refs - 1).to_be_bytes()[..]);
    }
    inner.files.apply_batch(batch)?;
    if last {
        // The metadata must be gone on disk before the contents are, or a crash could leave
        // metadata pointing at nothing.
        inner.db.flush()?;
        let blob = blob_path(&inner.blob_dir, &meta.sha256);
        match std::fs::remove_file(&blob) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %blob.display(), error = %e, "cannot remove unreferenced file contents");
            }
        }
    }
    Ok(true)
}

fn query_blocking(inner: &Inner, q: &FileQuery) -> SResult<Page<FileMeta>> {
    let ids: Vec<FileId> = if let Some(ids) = &q.ids {
        let mut v = ids.clone();
        v.sort();
        v.dedup();
        v
    } else {
        let prefix = match (&q.task, &q.file_type) {
            (Some(t), _) => task_prefix(&q.org, *t),
            (None, Some(ty)) => type_prefix(&q.org, ty),
            (None, None) => org_prefix(&q.org),
        }
        .into_vec();
        let mut v = Vec::new();
        for entry in inner.files.scan_prefix(&prefix) {
            let (k, _) = entry?;
            let (id, _) = take_u64(&k[prefix.len()..])
                .ok_or_else(|| SledStoreError::decode("file index key", "malformed"))?;
            v.push(FileId(id));
        }
        v
    };
    let by_id = q.ordering.as_ref().is_none_or(|o| o.field == "id");
    let limit = if q.limit == 0 { usize::MAX } else { q.limit };
    if by_id {
        // Ids are in order already: count every match, keep only the page.
        let descending = q.ordering.as_ref().is_some_and(|o| o.descending);
        let iter: Box<dyn Iterator<Item = FileId>> = if descending {
            Box::new(ids.into_iter().rev())
        } else {
            Box::new(ids.into_iter())
        };
        let mut count = 0u64;
        let mut items = Vec::new();
        for id in iter {
            if let Some(m) = load_meta(inner, id)?
                && q.matches(&m)
            {
                if count >= q.offset as u64 && items.len() < limit {
                    items.push(m);
                }
                count += 1;
            }
        }
        return Ok(Page { count, items });
    }
    let mut items = Vec::new();
    for id in ids {
        if let Some(m) = load_meta(inner, id)?
            && q.matches(&m)
        {
            items.push(m);
        }
    }
    q.sort(&mut items);
    let count = items.len() as u64;
    Ok(Page {
        count,
        items: items.into_iter().skip(q.offset).take(limit).collect(),
    })
}

#[async_trait]
impl FileStore for SledStore {
    async fn put_valid(&self, new: NewFile, mut body: ByteStream) -> Result<FileMeta> {
        // Receive up to SMALL_FILE in memory: a file that ends within it (a plugin's output, mostly)
        // is written, synced, committed and flushed in one trip to the blocking pool.
        let mut head: Vec<bytes::Bytes> = Vec::new();
        let mut held = 0usize;
        let mut ended = false;
        while held <= SMALL_FILE {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    held += chunk.len();
                    head.push(chunk);
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        let meta = if ended {
            self.blocking(move |inner| put_small(inner, new, &head))
                .await?
        } else {
            self.put_streaming(new, head, body).await?
        };
        tracing::debug!(id = %meta.id, size = meta.size, "stored a file");
        Ok(meta)
    }

    async fn meta(&self, id: FileId) -> Result<Option<FileMeta>> {
        Ok(self.blocking(move |inner| load_meta(inner, id)).await?)
    }

    async fn open(&self, id: FileId) -> Result<ByteStream> {
        let meta = self
            .meta(id)
            .await?
            .ok_or_else(|| kat_core::Error::not_found("file", id.to_string()))?;
        let path = blob_path(&self.inner.blob_dir, &meta.sha256);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SledStoreError::MissingBlob {
                    id: id.0,
                    sha256: meta.sha256,
                    path: path.display().to_string(),
                }
                .into());
            }
            Err(e) => {
                return Err(SledStoreError::io(format!("opening {}", path.display()), e).into());
            }
        };
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            file, READ_CHUNK,
        )))
    }

    async fn query_valid(&self, query: &FileQuery) -> Result<Page<FileMeta>> {
        let q = query.clone();
        Ok(self
            .blocking(move |inner| query_blocking(inner, &q))
            .await?)
    }

    async fn delete(&self, id: FileId) -> Result<bool> {
        let existed = self
            .blocking(move |inner| delete_blocking(inner, id))
            .await?;
        if existed {
            self.written().await?;
        }
        Ok(existed)
    }
}

pub(crate) fn verify_files(inner: &Inner, r: &mut crate::VerifyReport) -> SResult<()> {
    let mut problems = Vec::new();
    for entry in inner.files.scan_prefix([T_META]) {
        let (_, v) = entry?;
        r.files += 1;
        let m: FileMeta = match from_json("file metadata", &v) {
            Ok(m) => m,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        let blob = blob_path(&inner.blob_dir, &m.sha256);
        if !std::fs::metadata(&blob).is_ok_and(|b| b.len() == m.size) {
            problems.push(format!(
                "file {}: contents missing or truncated at {}",
                m.id,
                blob.display()
            ));
        }
        if !inner.files.contains_key(refs_key(&m.sha256))? {
            problems.push(format!(
                "file {}: no reference count for its contents",
                m.id
            ));
        }
        for k in index_keys(&m) {
            if !inner.files.contains_key(&k)? {
                problems.push(format!("file {}: an index entry is missing", m.id));
            }
        }
    }
    for p in problems {
        r.problem(p);
    }
    Ok(())
}
