//! The engine-independent half of [`prepare_entrypoint`]: the binary's hash, the archive that puts it and
//! its hash marker into the volume, reading the marker back, and the tiny image helper containers are created
//! from.
//!
//! How runtimes use it: create the volume, create (never start) a helper container from [`HELPER_IMAGE`]
//! (imported from [`helper_image_tar`] on first need) with the volume mounted read-write at
//! [`ENTRYPOINT_DIR`], implement [`VolumeAccess`] on it with the engine's archive API, and call
//! [`sync_entrypoint`]: it stats `/plugin/entrypoint`, reads `/plugin/entrypoint.sha256`, and uploads
//! [`EntrypointPayload::archive`] only when the volume holds something else. Then remove the helper.
//!
//! [`prepare_entrypoint`]: kat_core::runtime::ContainerRuntime::prepare_entrypoint

use std::io::Read;
use std::path::PathBuf;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tracing::{debug, info};

use kat_core::runtime::{ENTRYPOINT_DIR, EntrypointBinary};

/// The local image the volume helper containers are created from: one text file, imported `FROM scratch`, so
/// that no registry and no test image is needed. The tag is its recipe version.
///
/// ```
/// assert_eq!(kat_runtime_engine::HELPER_IMAGE, "kat-volume-helper:1");
/// ```
pub const HELPER_IMAGE: &str = "kat-volume-helper:1";
/// Label on helper containers and on the entrypoint volume (helpers are not plugin containers and carry no
/// `kat.managed`, so a reaper leaves them alone).
///
/// ```
/// assert_ne!(kat_runtime_engine::LABEL_HELPER, kat_core::runtime::LABEL_MANAGED);
/// ```
pub const LABEL_HELPER: &str = "kat.helper";
/// The file next to the entrypoint in the volume holding its sha256 (hex, newline-terminated).
///
/// ```
/// // In a container with the volume mounted: /plugin/entrypoint and /plugin/entrypoint.sha256.
/// assert_eq!(kat_runtime_engine::MARKER_FILE, "entrypoint.sha256");
/// ```
pub const MARKER_FILE: &str = "entrypoint.sha256";
/// The entrypoint's file name in the volume.
///
/// ```
/// assert_eq!(kat_runtime_engine::BINARY_FILE, "entrypoint");
/// ```
pub const BINARY_FILE: &str = "entrypoint";
/// The most bytes worth reading back of the marker's archive.
pub const MARKER_LIMIT: usize = 64 * 1024;

/// The path of the binary inside a helper container (`/plugin/entrypoint`).
///
/// ```
/// assert_eq!(kat_runtime_engine::binary_path(), kat_core::runtime::ENTRYPOINT_PATH);
/// ```
pub fn binary_path() -> String {
    format!("{ENTRYPOINT_DIR}/{BINARY_FILE}")
}

/// The path of the marker inside a helper container (`/plugin/entrypoint.sha256`).
///
/// ```
/// assert_eq!(kat_runtime_engine::marker_path(), "/plugin/entrypoint.sha256");
/// ```
pub fn marker_path() -> String {
    format!("{ENTRYPOINT_DIR}/{MARKER_FILE}")
}

/// Why the entrypoint binary could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the entrypoint binary {}: {source}", path.display())]
pub struct LoadError {
    /// The binary's path on the host.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// The entrypoint binary's content and hash.
///
/// ```
/// use kat_runtime_engine::EntrypointPayload;
/// let p = EntrypointPayload::from_bytes(b"#!/bin/sh\nexec \"$@\"\n".to_vec());
/// assert_eq!(p.sha256.len(), 64);
/// assert!(p.is_installed(Some((p.bytes.len() as u64, 0o755)), Some(&p.sha256)));
/// assert!(!p.is_installed(Some((p.bytes.len() as u64, 0o644)), Some(&p.sha256)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrypointPayload {
    /// The binary.
    pub bytes: Vec<u8>,
    /// Its sha256, lower-case hex.
    pub sha256: String,
}

impl EntrypointPayload {
    /// Hash `bytes`.
    ///
    /// ```
    /// let p = kat_runtime_engine::EntrypointPayload::from_bytes(b"abc".to_vec());
    /// assert_eq!(p.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /// ```
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        EntrypointPayload { bytes, sha256 }
    }

    /// Read and hash the binary, on a blocking thread (a file read plus a hash).
    ///
    /// ```no_run
    /// use kat_core::runtime::EntrypointBinary;
    /// use kat_runtime_engine::EntrypointPayload;
    /// # async fn demo() -> Result<(), kat_runtime_engine::LoadError> {
    /// let p = EntrypointPayload::load(&EntrypointBinary { path: "/usr/local/bin/kat-entrypoint".into() }).await?;
    /// println!("{} bytes, sha256 {}", p.bytes.len(), p.sha256);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// A [`LoadError`] naming the path when the file cannot be read.
    pub async fn load(binary: &EntrypointBinary) -> Result<Self, LoadError> {
        let path = binary.path.clone();
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let mut bytes = Vec::new();
                std::fs::File::open(&path)?.read_to_end(&mut bytes)?;
                Ok::<_, std::io::Error>(EntrypointPayload::from_bytes(bytes))
            })
        };
        match read.await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(source)) => Err(LoadError { path, source }),
            Err(e) => Err(LoadError {
                path,
                source: std::io::Error::other(format!("the reading task failed: {e}")),
            }),
        }
    }

    /// A tar holding [`BINARY_FILE`] (mode 0755, root) and then [`MARKER_FILE`] (so that the marker only
    /// appears once the binary is complete), to be extracted at [`ENTRYPOINT_DIR`].
    ///
    /// ```
    /// use kat_runtime_engine::{EntrypointPayload, read_marker};
    /// let p = EntrypointPayload::from_bytes(b"#!/bin/sh\n".to_vec());
    /// let tar = p.archive().expect("in-memory tar");
    /// assert_eq!(read_marker(&tar), Some(p.sha256.clone()));
    /// ```
    ///
    /// # Errors
    /// Only if the in-memory tar cannot be written.
    pub fn archive(&self) -> std::io::Result<Vec<u8>> {
        let marker = format!("{}\n", self.sha256);
        let mut b = tar::Builder::new(Vec::with_capacity(self.bytes.len() + 4096));
        append(&mut b, BINARY_FILE, 0o755, &self.bytes)?;
        append(&mut b, MARKER_FILE, 0o644, marker.as_bytes())?;
        b.into_inner()
    }

    /// Whether a volume whose binary has `stat` (size and mode, when it exists) and whose marker reads
    /// `marker` already holds this binary: same hash, same size, executable.
    ///
    /// ```
    /// use kat_runtime_engine::EntrypointPayload;
    /// let p = EntrypointPayload::from_bytes(b"x".to_vec());
    /// assert!(!p.is_installed(None, Some(&p.sha256)));
    /// assert!(!p.is_installed(Some((1, 0o755)), None));
    /// assert!(!p.is_installed(Some((2, 0o755)), Some(&p.sha256)));
    /// assert!(p.is_installed(Some((1, 0o755)), Some(&p.sha256)));
    /// ```
    pub fn is_installed(&self, stat: Option<(u64, u32)>, marker: Option<&str>) -> bool {
        matches!(stat, Some((size, mode)) if size == self.bytes.len() as u64 && mode & 0o111 != 0)
            && marker == Some(self.sha256.as_str())
    }
}

fn append(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data)
}

/// The hex sha256 in a tar (as an engine's archive API returns it) holding [`MARKER_FILE`], if it is
/// well-formed.
///
/// ```
/// assert_eq!(kat_runtime_engine::read_marker(b"not a tar"), None);
/// ```
pub fn read_marker(archive: &[u8]) -> Option<String> {
    let mut tar = tar::Archive::new(archive);
    let entries = tar.entries().ok()?;
    for entry in entries {
        let mut entry = entry.ok()?;
        let is_marker = entry
            .path()
            .ok()
            .is_some_and(|p| p.file_name().is_some_and(|n| n == MARKER_FILE));
        if !is_marker {
            continue;
        }
        let mut text = String::new();
        entry
            .by_ref()
            .take(MARKER_LIMIT as u64)
            .read_to_string(&mut text)
            .ok()?;
        let sha = text.trim();
        return (sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| sha.to_ascii_lowercase());
    }
    None
}

/// The tar that [`HELPER_IMAGE`] is imported from (deterministic: one text file, mtime 0).
///
/// ```
/// let tar = kat_runtime_engine::helper_image_tar().expect("in-memory tar");
/// assert_eq!(tar, kat_runtime_engine::helper_image_tar().expect("in-memory tar"));
/// ```
///
/// # Errors
/// Only if the in-memory tar cannot be written.
pub fn helper_image_tar() -> std::io::Result<Vec<u8>> {
    let text = b"kat-rs volume helper: containers from this image are created, never started, to reach a volume\n";
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, "kat-volume-helper.txt", 0o644, text)?;
    b.into_inner()
}

/// What [`sync_entrypoint`] needs of an engine: its archive API on a helper container that has the
/// entrypoint volume mounted read-write at [`ENTRYPOINT_DIR`].
#[async_trait]
pub trait VolumeAccess: Send + Sync {
    /// The engine's error.
    type Error: Send;

    /// The size and mode of `path`, `None` when it does not exist.
    async fn stat(&self, path: &str) -> Result<Option<(u64, u32)>, Self::Error>;

    /// A tar of `path` as the engine's archive API gives it, `None` when it does not exist (or is longer than
    /// `limit` bytes: no marker is).
    async fn read_archive(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, Self::Error>;

    /// Extract `tar` into the directory `dir`.
    async fn upload(&self, dir: &str, tar: Vec<u8>) -> Result<(), Self::Error>;
}

/// Why [`sync_entrypoint`] failed.
#[derive(Debug)]
pub enum SyncError<E> {
    /// An engine call failed.
    Engine(E),
    /// The archive could not be built.
    Archive(std::io::Error),
}

impl<E> SyncError<E> {
    /// The engine's error, or `archive(e)` for an archive that could not be built.
    ///
    /// ```
    /// use kat_runtime_engine::SyncError;
    /// let e: SyncError<String> = SyncError::Archive(std::io::Error::other("disk"));
    /// assert_eq!(e.into_engine(|e| format!("archive: {e}")), "archive: disk");
    /// ```
    pub fn into_engine(self, archive: impl FnOnce(std::io::Error) -> E) -> E {
        match self {
            SyncError::Engine(e) => e,
            SyncError::Archive(e) => archive(e),
        }
    }
}

/// Make the volume behind `access` (named `volume`, for the logs) hold `payload`: when its binary (size,
/// executable bit) and marker match, nothing is written; else [`EntrypointPayload::archive`] is uploaded.
/// Returns whether it wrote.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Mutex;
/// use kat_runtime_engine::{EntrypointPayload, VolumeAccess, sync_entrypoint};
///
/// /// A volume in memory: the last uploaded tar.
/// #[derive(Default)]
/// struct Memory(Mutex<Option<Vec<u8>>>);
///
/// #[async_trait::async_trait]
/// impl VolumeAccess for Memory {
///     type Error = std::convert::Infallible;
///     async fn stat(&self, _path: &str) -> Result<Option<(u64, u32)>, Self::Error> {
///         Ok(self.0.lock().expect("lock").as_ref().map(|_| (3, 0o755)))
///     }
///     async fn read_archive(&self, _path: &str, _limit: usize) -> Result<Option<Vec<u8>>, Self::Error> {
///         Ok(self.0.lock().expect("lock").clone())
///     }
///     async fn upload(&self, _dir: &str, tar: Vec<u8>) -> Result<(), Self::Error> {
///         *self.0.lock().expect("lock") = Some(tar);
///         Ok(())
///     }
/// }
///
/// let volume = Memory::default();
/// let payload = EntrypointPayload::from_bytes(b"abc".to_vec());
/// assert!(matches!(sync_entrypoint(&volume, "v", &payload).await, Ok(true)), "first time: written");
/// assert!(matches!(sync_entrypoint(&volume, "v", &payload).await, Ok(false)), "then: left alone");
/// # }
/// ```
///
/// # Errors
/// [`SyncError`] when an engine call fails or the archive cannot be built.
pub async fn sync_entrypoint<V: VolumeAccess + ?Sized>(
    access: &V,
    volume: &str,
    payload: &EntrypointPayload,
) -> Result<bool, SyncError<V::Error>> {
    let stat = access
        .stat(&binary_path())
        .await
        .map_err(SyncError::Engine)?;
    let current = payload.is_installed(stat, Some(&payload.sha256)) && {
        let marker = access
            .read_archive(&marker_path(), MARKER_LIMIT)
            .await
            .map_err(SyncError::Engine)?;
        payload.is_installed(stat, marker.as_deref().and_then(read_marker).as_deref())
    };
    if current {
        debug!(volume, sha256 = %payload.sha256, "entrypoint already in the volume");
        return Ok(false);
    }
    let tar = payload.archive().map_err(SyncError::Archive)?;
    access
        .upload(ENTRYPOINT_DIR, tar)
        .await
        .map_err(SyncError::Engine)?;
    info!(volume, sha256 = %payload.sha256, "entrypoint written to the volume");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_holds_the_binary_then_its_marker() {
        let bin = EntrypointPayload::from_bytes(b"#!/bin/sh\necho hi\n".to_vec());
        let archive = bin.archive().expect("archive");
        let mut tar = tar::Archive::new(&archive[..]);
        let mut names = Vec::new();
        for e in tar.entries().expect("entries") {
            let e = e.expect("entry");
            names.push((
                e.path().expect("path").display().to_string(),
                e.header().mode().expect("mode"),
                e.header().uid().expect("uid"),
            ));
        }
        assert_eq!(
            names,
            vec![
                ("entrypoint".into(), 0o755, 0),
                ("entrypoint.sha256".into(), 0o644, 0)
            ]
        );
        assert_eq!(read_marker(&archive), Some(bin.sha256.clone()));
    }

    #[test]
    fn malformed_markers_are_ignored() {
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, MARKER_FILE, 0o644, b"xyz").expect("append");
        let archive = b.into_inner().expect("tar");
        assert_eq!(read_marker(&archive), None);
        assert_eq!(read_marker(b"not a tar"), None);
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, "other", 0o644, b"x").expect("append");
        assert_eq!(read_marker(&b.into_inner().expect("tar")), None);
    }

    #[test]
    fn upper_case_markers_are_normalised() {
        let sha = "AB".repeat(32);
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, MARKER_FILE, 0o644, format!("{sha}\n").as_bytes()).expect("append");
        assert_eq!(
            read_marker(&b.into_inner().expect("tar")),
            Some("ab".repeat(32))
        );
    }

    #[tokio::test]
    async fn load_hashes_the_file_and_names_a_missing_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("entrypoint");
        std::fs::write(&path, b"abc").expect("write");
        let p = EntrypointPayload::load(&EntrypointBinary { path })
            .await
            .expect("load");
        assert_eq!(p, EntrypointPayload::from_bytes(b"abc".to_vec()));
        let e = EntrypointPayload::load(&EntrypointBinary {
            path: "/nonexistent/kat".into(),
        })
        .await
        .expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/kat"), "{e}");
    }
}
