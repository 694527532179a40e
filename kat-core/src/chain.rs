//! The scan level a file carries along a chain of plugins, and the gate a consumer passes.
//!
//! A file's scan level ([`FileMeta::scan_level`]) is fixed when it is stored and travels with it:
//!
//! - a file a task uploads carries the level of the task's inputs ([`level_of_output`]): for object
//!   inputs the lowest scan level among them (an object without a level gives none), for file inputs
//!   the lowest level those files carry, so the level of the objects a chain started from reaches
//!   every later hop; a task without inputs (a standalone plugin) gives level 0;
//! - a file an operator uploads carries the level the operator states (`POST /file/?scan_level=`);
//! - the engine's own files (mode 4's stdin) carry none and never chain.
//!
//! A consumer plugin may run on a file ([`check`]) only when its `scan_level` is at most the level
//! the file carries. What does not carry a level (records stored before files carried one, see
//! [`LevelSource::Unrecorded`]) is judged by [`effective_level`]. This module holds no state: it reads
//! the stores it is given.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use kat_core::chain;
//! use kat_core::memory::{MemoryFileStore, MemoryObjectStore, MemoryTaskStore};
//! use kat_core::object::ScanLevel;
//! use kat_core::plugin::PluginDef;
//! use kat_core::store::{FileStore, LevelSource, NewFile};
//!
//! let (objects, files, tasks) =
//!     (MemoryObjectStore::default(), MemoryFileStore::default(), MemoryTaskStore::default());
//! let new = NewFile {
//!     org: "acme".parse().unwrap(),
//!     file_type: "nmap".into(),
//!     name: "scan.xml".into(),
//!     task: None,
//!     scan_level: Some(ScanLevel::new(1).unwrap()),
//!     level_from: LevelSource::Operator,
//! };
//! let file = files.put(new, Box::pin(futures::stream::empty())).await.unwrap();
//! let defs = PluginDef::parse_file(
//!     r#"[{"plugin_id": "parse", "scan_level": 2, "consumes": ["file:nmap"],
//!          "oci_image": "i", "oci_arguments": ["parse", "{file}"]}]"#,
//!     "p.json",
//! )
//! .unwrap();
//! let e = chain::check(&objects, &files, &tasks, &defs[0], &file).await.unwrap_err();
//! assert!(e.to_string().contains("needs scan level L2 but file 1 carries L1"), "{e}");
//! # });
//! ```

use crate::object::ScanLevel;
use crate::plugin::PluginDef;
use crate::store::{FileMeta, FileStore, LevelSource, ObjectStore, TaskStore};
use crate::task::Task;
use crate::{Error, Result};

fn lowest(a: Option<Option<ScanLevel>>, b: Option<ScanLevel>) -> Option<Option<ScanLevel>> {
    Some(match a {
        None => b,
        Some(a) => a.zip(b).map(|(a, b)| a.min(b)),
    })
}

/// The scan level a file uploaded by `task` carries, and where it comes from (see the module docs):
/// the lowest level of its input objects as they are now, the lowest level its input files carry,
/// or level 0 for a task without inputs.
///
/// # Errors
/// Store errors.
pub async fn level_of_output(
    objects: &dyn ObjectStore,
    files: &dyn FileStore,
    tasks: &dyn TaskStore,
    task: &Task,
) -> Result<(Option<ScanLevel>, LevelSource)> {
    if !task.input.files.is_empty() {
        let mut level = None;
        for id in &task.input.files {
            let carried = match files.meta(*id).await? {
                Some(m) if m.level_from == LevelSource::Unrecorded => {
                    // One hop back only for records without a level, so that the recursion is bounded.
                    match m.task {
                        Some(t) => match tasks.get_task(t).await? {
                            Some(t) if t.input.files.is_empty() => {
                                Box::pin(level_of_output(objects, files, tasks, &t))
                                    .await?
                                    .0
                            }
                            _ => None,
                        },
                        None => None,
                    }
                }
                Some(m) => m.scan_level,
                None => None,
            };
            level = lowest(level, carried);
        }
        return Ok((level.flatten(), LevelSource::Files));
    }
    if !task.input.objects.is_empty() {
        let mut level = None;
        for r in &task.input.objects {
            // A URL's level is its host's (crate::store::scan_of).
            let scan = crate::store::scan_of_key(objects, &task.org, r.object_type, &r.key).await?;
            level = lowest(level, scan.and_then(|p| p.level));
        }
        return Ok((level.flatten(), LevelSource::Objects));
    }
    Ok((ScanLevel::new(0).ok(), LevelSource::NoInputs))
}

/// The level the gate uses for `file`: the level it carries; for a record stored before files carried
/// one ([`LevelSource::Unrecorded`]), the level of its producing task's inputs, and none (no consumer
/// runs) when no task produced it.
///
/// # Errors
/// Store errors.
pub async fn effective_level(
    objects: &dyn ObjectStore,
    files: &dyn FileStore,
    tasks: &dyn TaskStore,
    file: &FileMeta,
) -> Result<Option<ScanLevel>> {
    if file.level_from != LevelSource::Unrecorded {
        return Ok(file.scan_level);
    }
    let Some(producer) = file.task else {
        return Ok(None);
    };
    match tasks.get_task(producer).await? {
        Some(t) => Ok(level_of_output(objects, files, tasks, &t).await?.0),
        None => Ok(None),
    }
}

/// The gate of a consumer on a file: `plugin` may run on `file` only when its scan level is at most
/// the level the file carries ([`effective_level`]).
///
/// # Errors
/// [`Error::PermissionDenied`] naming the plugin's level, the file and the level it carries; store
/// errors.
pub async fn check(
    objects: &dyn ObjectStore,
    files: &dyn FileStore,
    tasks: &dyn TaskStore,
    plugin: &PluginDef,
    file: &FileMeta,
) -> Result<()> {
    let level = effective_level(objects, files, tasks, file).await?;
    if level.is_some_and(|l| l >= plugin.scan_level) {
        return Ok(());
    }
    let from = match file.level_from {
        LevelSource::Objects => "the objects its chain started from",
        LevelSource::Files => "the files its chain started from",
        LevelSource::NoInputs => "a task without inputs",
        LevelSource::Operator => "the operator who uploaded it",
        LevelSource::Engine => "the engine, which never chains its own files",
        LevelSource::Unrecorded => "its producing task's inputs; stored without a level",
    };
    Err(Error::PermissionDenied(format!(
        "plugin {} needs scan level {} but file {} carries {} (from {from})",
        plugin.plugin_id,
        plugin.scan_level,
        file.id,
        level.map_or("no scan level".to_string(), |l| l.to_string()),
    )))
}
