//! Engine-independent checks and conversions of a [`ContainerSpec`]: names, labels, validation, limits.

use std::collections::{BTreeMap, HashMap};

use kat_core::runtime::{
    ContainerSpec, LABEL_DEPLOYMENT, LABEL_MANAGED, LABEL_TASK, ManagedContainer,
};
use kat_core::task::TaskId;

/// The longest container name [`container_name`] returns (its random suffix included).
pub const MAX_CONTAINER_NAME: usize = 128;

/// A spec that cannot be turned into a container: which field, and what is wrong with it.
///
/// Converts into [`kat_core::Error::Invalid`] at that field.
///
/// ```
/// use kat_runtime_engine::SpecError;
/// let e = SpecError::new("env", "invalid variable name \"A=B\"");
/// assert_eq!(e.to_string(), "invalid container spec at env: invalid variable name \"A=B\"");
/// assert!(matches!(kat_core::Error::from(e), kat_core::Error::Invalid { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid container spec at {field}: {message}")]
pub struct SpecError {
    /// The offending field (`env`, `argv`, `hardening.cap_add`, ...).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl SpecError {
    /// A [`SpecError`] at `field`.
    ///
    /// ```
    /// let e = kat_runtime_engine::SpecError::new("image", "empty image reference");
    /// assert_eq!(e.field, "image");
    /// ```
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        SpecError {
            field,
            message: message.into(),
        }
    }
}

impl From<SpecError> for kat_core::Error {
    fn from(e: SpecError) -> Self {
        let message = e.to_string();
        kat_core::Error::invalid(e.field, message)
    }
}

/// A valid, unique container name derived from the requested one.
///
/// Docker and Podman accept `[a-zA-Z0-9][a-zA-Z0-9_.-]+`: any other character becomes `-`, a name that does
/// not start with a letter or digit gets a `kat-` prefix, and a random 12-hex suffix makes it unique even when
/// two runs ask for the same name at the same moment (the original's `plugin_ts` names could collide). At most
/// [`MAX_CONTAINER_NAME`] characters.
///
/// ```
/// use kat_runtime_engine::container_name;
/// let a = container_name("plugin/with spaces");
/// assert!(a.starts_with("plugin-with-spaces-"));
/// assert_ne!(a, container_name("plugin/with spaces"));
/// assert!(container_name("-x").starts_with("kat--x-"));
/// ```
pub fn container_name(requested: &str) -> String {
    let mut base: String = requested
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !base.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        base.insert_str(0, "kat-");
    }
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let suffix = &suffix[..12];
    base.truncate(MAX_CONTAINER_NAME - suffix.len() - 1);
    format!("{base}-{suffix}")
}

/// How old a volume helper container must be before a reaper takes it for one that a process killed
/// during `prepare_entrypoint` left behind. A prepare takes seconds; replicas sharing a deployment (and so
/// its helpers' label) must not remove the helper another replica is still using.
pub const HELPER_GRACE_SECS: u64 = 120;

/// The name of a new volume helper container: `kat-volume-helper-<unix seconds>-<random>`, so that a
/// reaper can tell its age ([`helper_age_secs`]).
///
/// ```
/// let name = kat_runtime_engine::helper_name();
/// assert_eq!(kat_runtime_engine::helper_age_secs(&name, kat_runtime_engine::unix_now_secs()), Some(0));
/// ```
pub fn helper_name() -> String {
    container_name(&format!("kat-volume-helper-{}", unix_now_secs()))
}

/// Seconds since the Unix epoch, by this machine's clock.
pub fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How old a helper named by [`helper_name`] is at `now` (Unix seconds); `None` for a name without a
/// creation time (a helper of an older version, or another name).
///
/// ```
/// use kat_runtime_engine::helper_age_secs;
/// assert_eq!(helper_age_secs("/kat-volume-helper-1000-0123456789ab", 1120), Some(120));
/// assert_eq!(helper_age_secs("kat-volume-helper-0123456789ab", 1120), None);
/// ```
pub fn helper_age_secs(name: &str, now: u64) -> Option<u64> {
    let rest = name
        .trim_start_matches('/')
        .strip_prefix("kat-volume-helper-")?;
    let (created, _) = rest.split_once('-')?;
    let created: u64 = created.parse().ok()?;
    Some(now.saturating_sub(created))
}

/// Whether `name` is a valid volume name for Docker and Podman: 2 to 255 characters, letters, digits and
/// `_.-`, starting with a letter or digit.
///
/// ```
/// use kat_runtime_engine::valid_volume_name;
/// assert!(valid_volume_name("plugin-entrypoint"));
/// assert!(!valid_volume_name("a/b"));
/// assert!(!valid_volume_name("-x"));
/// ```
pub fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && name.len() <= 255
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

/// [`valid_volume_name`] as a check: a [`SpecError`] at `field` saying what a volume name may hold.
///
/// ```
/// use kat_runtime_engine::check_volume_name;
/// assert!(check_volume_name("volume", "plugin-entrypoint").is_ok());
/// let e = check_volume_name("volume", "bad/name").expect_err("a slash");
/// assert!(e.to_string().contains("bad/name"));
/// ```
///
/// # Errors
/// When the name is not valid.
pub fn check_volume_name(field: &'static str, name: &str) -> Result<(), SpecError> {
    if valid_volume_name(name) {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!(
                "not a valid volume name: {name:?} (2 to 255 letters, digits, `_.-`, starting with a letter or digit)"
            ),
        ))
    }
}

/// Whether `cap` looks like a Linux capability name: `NET_RAW` or `CAP_NET_RAW` (upper-case letters, digits,
/// `_`).
///
/// ```
/// use kat_runtime_engine::valid_capability;
/// assert!(valid_capability("NET_RAW"));
/// assert!(!valid_capability("net raw"));
/// ```
pub fn valid_capability(cap: &str) -> bool {
    !cap.is_empty()
        && cap
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The repository and tag to pull `image` with. Without a tag or digest an engine may pull every tag of the
/// repository, so `latest` is made explicit the way `docker pull` does; a digest reference is kept whole.
///
/// ```
/// use kat_runtime_engine::pull_reference;
/// assert_eq!(pull_reference("busybox"), ("busybox".into(), Some("latest".into())));
/// assert_eq!(
///     pull_reference("127.0.0.1:5000/kat/dns:v2"),
///     ("127.0.0.1:5000/kat/dns".into(), Some("v2".into()))
/// );
/// assert_eq!(pull_reference("busybox@sha256:abc"), ("busybox@sha256:abc".into(), None));
/// ```
pub fn pull_reference(image: &str) -> (String, Option<String>) {
    if image.contains('@') {
        return (image.to_string(), None);
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if let Some((_, tag)) = last.rsplit_once(':') {
        let repo = &image[..image.len() - tag.len() - 1];
        (repo.to_string(), Some(tag.to_string()))
    } else {
        (image.to_string(), Some("latest".to_string()))
    }
}

/// The options of the `/tmp` tmpfs: sticky world-writable, no devices, no set-uid, no exec, `bytes` at most.
///
/// ```
/// assert_eq!(
///     kat_runtime_engine::tmpfs_options(1 << 20),
///     "rw,nosuid,nodev,noexec,size=1048576,mode=1777"
/// );
/// ```
pub fn tmpfs_options(bytes: u64) -> String {
    format!("rw,nosuid,nodev,noexec,size={bytes},mode=1777")
}

/// The spec's labels plus [`LABEL_MANAGED`]`=true`.
///
/// ```
/// use kat_core::runtime::{ContainerSpec, LABEL_MANAGED, LABEL_TASK};
/// let mut spec = ContainerSpec::new("t", "img", ["true"]);
/// spec.labels.insert(LABEL_TASK.into(), "x".into());
/// let labels = kat_runtime_engine::container_labels(&spec);
/// assert_eq!(labels.get(LABEL_MANAGED).map(String::as_str), Some("true"));
/// assert_eq!(labels.get(LABEL_TASK).map(String::as_str), Some("x"));
/// ```
pub fn container_labels(spec: &ContainerSpec) -> BTreeMap<String, String> {
    let mut labels = spec.labels.clone();
    labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
    labels
}

/// A listed container as a [`ManagedContainer`] from its labels: `task` is its
/// [`LABEL_TASK`](kat_core::runtime::LABEL_TASK) parsed (or `None`), `deployment` its
/// [`LABEL_DEPLOYMENT`](kat_core::runtime::LABEL_DEPLOYMENT); a leading `/` of the name is dropped.
///
/// ```
/// use std::collections::HashMap;
/// use kat_runtime_engine::managed_container;
/// let labels = HashMap::from([
///     ("kat.task".to_string(), "not-a-task".to_string()),
///     ("kat.deployment".to_string(), "blue".to_string()),
/// ]);
/// let c = managed_container("abc".into(), "/dns-1".into(), Some(&labels), "running".into());
/// assert_eq!(c.name, "dns-1");
/// assert!(c.task.is_none());
/// assert_eq!(c.deployment.as_deref(), Some("blue"));
/// ```
pub fn managed_container(
    id: String,
    name: String,
    labels: Option<&HashMap<String, String>>,
    state: String,
) -> ManagedContainer {
    let label = |k: &str| labels.and_then(|l| l.get(k));
    ManagedContainer {
        id,
        name: name.trim_start_matches('/').to_string(),
        task: label(LABEL_TASK).and_then(|t| t.parse::<TaskId>().ok()),
        state,
        deployment: label(LABEL_DEPLOYMENT).cloned(),
    }
}

/// [`managed_container`] for an entry of an engine's container listing: `None` without an id; the name is
/// the first of `names` (empty without any).
///
/// ```
/// use kat_runtime_engine::listed_container;
/// let c = listed_container(Some("abc".into()), Some(vec!["/dns-1".into()]), None, "exited".into());
/// assert_eq!(c.map(|c| (c.id, c.name)), Some(("abc".into(), "dns-1".into())));
/// assert!(listed_container(None, None, None, "running".into()).is_none());
/// ```
pub fn listed_container(
    id: Option<String>,
    names: Option<Vec<String>>,
    labels: Option<&HashMap<String, String>>,
    state: String,
) -> Option<ManagedContainer> {
    let name = names.and_then(|n| n.into_iter().next()).unwrap_or_default();
    Some(managed_container(id?, name, labels, state))
}

/// The spec's limits in the signed types the engines' APIs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineLimits {
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// Maximum number of processes.
    pub pids: Option<i64>,
}

impl EngineLimits {
    /// The CPU limit as a CFS quota for `period_us` microseconds (at least 1000, the kernel's minimum).
    ///
    /// ```
    /// use kat_runtime_engine::EngineLimits;
    /// let l = EngineLimits { nano_cpus: Some(500_000_000), ..Default::default() };
    /// assert_eq!(l.cpu_quota(100_000), Some(50_000));
    /// ```
    pub fn cpu_quota(&self, period_us: i64) -> Option<i64> {
        self.nano_cpus.map(|n| {
            let quota = i128::from(n) * i128::from(period_us) / 1_000_000_000;
            i64::try_from(quota).unwrap_or(i64::MAX).max(1000)
        })
    }
}

fn to_i64(field: &'static str, v: u64) -> Result<i64, SpecError> {
    i64::try_from(v).map_err(|_| SpecError::new(field, format!("{v} is too large")))
}

/// Check everything about `spec` that no engine accepts (an empty image, bad environment names, NUL bytes,
/// capability names that are not names, an invalid entrypoint volume name, limits out of range) and return
/// its limits in engine types.
///
/// ```
/// use kat_core::runtime::ContainerSpec;
/// use kat_runtime_engine::check_spec;
/// let spec = ContainerSpec::new("t", "img", ["echo", "hi"]);
/// assert_eq!(check_spec(&spec).expect("valid").pids, Some(256));
/// let mut bad = spec.clone();
/// bad.env.insert("A=B".into(), "v".into());
/// assert_eq!(check_spec(&bad).expect_err("bad env").field, "env");
/// ```
///
/// # Errors
/// A [`SpecError`] naming the first offending field.
pub fn check_spec(spec: &ContainerSpec) -> Result<EngineLimits, SpecError> {
    if spec.image.trim().is_empty() {
        return Err(SpecError::new("image", "empty image reference"));
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(SpecError::new(
                "env",
                format!("invalid variable name {k:?}"),
            ));
        }
        if v.contains('\0') {
            return Err(SpecError::new(
                "env",
                format!("the value of {k} contains a NUL byte"),
            ));
        }
    }
    if let Some(i) = spec.argv.iter().position(|a| a.contains('\0')) {
        return Err(SpecError::new(
            "argv",
            format!("argument {i} contains a NUL byte"),
        ));
    }
    if let Some(bad) = spec.hardening.cap_add.iter().find(|c| !valid_capability(c)) {
        return Err(SpecError::new(
            "hardening.cap_add",
            format!("not a capability name: {bad:?}"),
        ));
    }
    for p in &spec.hardening.writable_paths {
        kat_core::policy::check_writable_path(p)
            .map_err(|m| SpecError::new("hardening.writable_paths", m))?;
    }
    if let Some(user) = &spec.hardening.user
        && (user.is_empty() || user.contains('\0'))
    {
        return Err(SpecError::new(
            "hardening.user",
            format!("not a user: {user:?}"),
        ));
    }
    if let Some(ep) = &spec.entrypoint {
        check_volume_name("entrypoint.volume", &ep.volume)?;
    }
    Ok(EngineLimits {
        memory_bytes: spec
            .limits
            .memory_bytes
            .map(|m| to_i64("limits.memory_bytes", m))
            .transpose()?,
        nano_cpus: spec
            .limits
            .nano_cpus
            .map(|c| to_i64("limits.nano_cpus", c))
            .transpose()?,
        pids: spec.limits.pids.map(i64::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kat_core::runtime::EntrypointMount;

    #[test]
    fn names_are_valid_and_unique() {
        for requested in [
            "dns",
            "kat-dns-1",
            "_weird name/with:chars",
            "ünïcode",
            "",
            "-x",
        ] {
            let a = container_name(requested);
            let b = container_name(requested);
            assert_ne!(a, b);
            assert!(a.len() <= MAX_CONTAINER_NAME);
            let mut chars = a.chars();
            assert!(
                chars.next().is_some_and(|c| c.is_ascii_alphanumeric()),
                "{a}"
            );
            assert!(
                chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
                "{a}"
            );
        }
        assert!(container_name("dns-task").starts_with("dns-task-"));
        assert!(container_name(&"x".repeat(500)).len() <= MAX_CONTAINER_NAME);
    }

    #[test]
    fn volume_names() {
        assert!(valid_volume_name("plugin-entrypoint"));
        assert!(!valid_volume_name("-x"));
        assert!(!valid_volume_name("a/b"));
        assert!(!valid_volume_name("a"));
        assert!(!valid_volume_name(&"a".repeat(256)));
    }

    #[test]
    fn pull_references_always_name_a_tag_or_digest() {
        assert_eq!(
            pull_reference("busybox"),
            ("busybox".into(), Some("latest".into()))
        );
        assert_eq!(
            pull_reference("busybox:1.36"),
            ("busybox".into(), Some("1.36".into()))
        );
        assert_eq!(
            pull_reference("127.0.0.1:5000/kat/dns"),
            ("127.0.0.1:5000/kat/dns".into(), Some("latest".into()))
        );
        assert_eq!(
            pull_reference("127.0.0.1:5000/kat/dns:v2"),
            ("127.0.0.1:5000/kat/dns".into(), Some("v2".into()))
        );
        assert_eq!(
            pull_reference("busybox@sha256:abc"),
            ("busybox@sha256:abc".into(), None)
        );
    }

    #[test]
    fn bad_specs_are_rejected() {
        let mut spec = ContainerSpec::new("t", "img", ["x"]);
        spec.env.insert("A=B".into(), "v".into());
        assert_eq!(check_spec(&spec).map_err(|e| e.field), Err("env"));
        let mut spec = ContainerSpec::new("t", "img", ["x"]);
        spec.env.insert("A".into(), "a\0b".into());
        assert_eq!(check_spec(&spec).map_err(|e| e.field), Err("env"));
        let mut spec = ContainerSpec::new("t", "img", ["x\0y"]);
        assert_eq!(check_spec(&spec).map_err(|e| e.field), Err("argv"));
        spec.argv = vec!["ok".into()];
        spec.hardening.cap_add = vec!["net raw".into()];
        assert_eq!(
            check_spec(&spec).map_err(|e| e.field),
            Err("hardening.cap_add")
        );
        let spec = ContainerSpec::new("t", " ", ["x"]);
        assert_eq!(check_spec(&spec).map_err(|e| e.field), Err("image"));
        let mut spec = ContainerSpec::new("t", "img", ["x"]);
        spec.entrypoint = Some(EntrypointMount {
            volume: "a/b".into(),
            sha256: "00".into(),
        });
        assert_eq!(
            check_spec(&spec).map_err(|e| e.field),
            Err("entrypoint.volume")
        );
        let mut spec = ContainerSpec::new("t", "img", ["x"]);
        spec.limits.memory_bytes = Some(u64::MAX);
        assert_eq!(
            check_spec(&spec).map_err(|e| e.field),
            Err("limits.memory_bytes")
        );
        let mut spec = ContainerSpec::new("t", "img", ["x"]);
        spec.hardening.user = Some(String::new());
        assert_eq!(
            check_spec(&spec).map_err(|e| e.field),
            Err("hardening.user")
        );
        for bad in ["relative", "/plugin", "/plugin/x", "/proc", "/a/../b", "/"] {
            let mut spec = ContainerSpec::new("t", "img", ["x"]);
            spec.hardening.writable_paths = vec![bad.into()];
            assert_eq!(
                check_spec(&spec).map_err(|e| e.field),
                Err("hardening.writable_paths"),
                "{bad}"
            );
        }
    }

    #[test]
    fn limits_convert() {
        let spec = ContainerSpec::new("t", "img", ["x"]);
        let l = check_spec(&spec).expect("valid");
        assert_eq!(l.memory_bytes, Some(1 << 30));
        assert_eq!(l.nano_cpus, Some(1_000_000_000));
        assert_eq!(l.cpu_quota(100_000), Some(100_000));
        let tiny = EngineLimits {
            nano_cpus: Some(1),
            ..Default::default()
        };
        assert_eq!(tiny.cpu_quota(100_000), Some(1000));
        assert_eq!(EngineLimits::default().cpu_quota(100_000), None);
    }

    #[test]
    fn managed_containers_parse_their_task() {
        let task = TaskId::new();
        let labels = HashMap::from([(LABEL_TASK.to_string(), task.to_string())]);
        let c = managed_container("id".into(), "/n".into(), Some(&labels), "exited".into());
        assert_eq!(c.task, Some(task));
        assert_eq!(c.name, "n");
        assert_eq!(c.deployment, None);
        assert!(c.belongs_to(kat_core::runtime::DEFAULT_DEPLOYMENT));
        let c = managed_container("id".into(), "n".into(), None, "running".into());
        assert_eq!(c.task, None);
    }
}
