//! Turning a [`ContainerSpec`] into a libpod SpecGenerator (pure functions, unit-tested), and the ulimits
//! containers get.

use kat_core::runtime::{ContainerSpec, ENTRYPOINT_DIR, ENTRYPOINT_PATH, NetworkMode};
use kat_runtime_engine::{check_spec, container_labels, tmpfs_options};
use serde_json::{Value, json};

use crate::error::PodmanError;

/// The CFS period the CPU limit is expressed in (microseconds).
const CPU_PERIOD_US: i64 = 100_000;

/// The `RLIMIT_NOFILE` and `RLIMIT_NPROC` every container gets (soft = hard).
///
/// Podman's own defaults raise `nofile` to 1048576, which fails (`operation not permitted` at start) wherever
/// the service may not raise its rlimits, as in this sandbox. The runtime therefore always sets both, and
/// never above the hard limits of the current process ([`Ulimits::within_current`]).
///
/// ```
/// use kat_runtime_podman::Ulimits;
/// let u = Ulimits::default();
/// assert_eq!((u.nofile, u.nproc), (1024, 1024));
/// let small = Ulimits { nofile: 1 << 40, nproc: 64 }.within_current();
/// assert!(small.nofile < 1 << 40);
/// assert_eq!(small.nproc, 64);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimits {
    /// Open files.
    pub nofile: u64,
    /// Processes of the container's user (all of its processes on the host count).
    pub nproc: u64,
}

impl Default for Ulimits {
    fn default() -> Self {
        Ulimits {
            nofile: 1024,
            nproc: 1024,
        }
    }
}

impl Ulimits {
    /// These limits lowered to the hard limits of the current process where those are lower (read from
    /// `/proc/self/limits`; unchanged where it cannot be read). The service's own limits may be lower still:
    /// then the run fails with [`PodmanError::UlimitsRefused`](crate::PodmanError::UlimitsRefused).
    ///
    /// ```
    /// let u = kat_runtime_podman::Ulimits { nofile: 64, nproc: 64 }.within_current();
    /// assert_eq!((u.nofile, u.nproc), (64, 64));
    /// ```
    pub fn within_current(self) -> Self {
        let current = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        self.within(&current)
    }

    /// These limits lowered to the hard limits in `limits` (the text of a `/proc/<pid>/limits`).
    fn within(self, limits: &str) -> Self {
        let hard = |name: &str| {
            limits
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l[name.len()..].split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        Ulimits {
            nofile: hard("Max open files").map_or(self.nofile, |h| self.nofile.min(h)),
            nproc: hard("Max processes").map_or(self.nproc, |h| self.nproc.min(h)),
        }
    }
}

/// The libpod network namespace and networks for `mode`.
fn network(mode: &NetworkMode) -> (Value, Option<Value>) {
    match mode {
        NetworkMode::Host => (json!({ "nsmode": "host" }), None),
        NetworkMode::None => (json!({ "nsmode": "none" }), None),
        // Podman's default network (named `podman`, a bridge).
        NetworkMode::Bridge => (json!({ "nsmode": "bridge" }), None),
        NetworkMode::Named(name) => (json!({ "nsmode": "bridge" }), Some(json!({ name: {} }))),
    }
}

/// The SpecGenerator for `spec`, named `name`: hardened, our labels, the read-only entrypoint volume, the
/// ulimits, no log files (output is read over attach).
pub(crate) fn create_body(
    spec: &ContainerSpec,
    name: &str,
    ulimits: Ulimits,
) -> Result<Value, PodmanError> {
    let limits = check_spec(spec)?;
    let h = &spec.hardening;
    let (netns, networks) = network(&spec.network);

    let mut resources = serde_json::Map::new();
    if let Some(m) = limits.memory_bytes {
        // `swap` is memory plus swap: no swap beyond the memory limit.
        resources.insert("memory".into(), json!({ "limit": m, "swap": m }));
    }
    if let Some(quota) = limits.cpu_quota(CPU_PERIOD_US) {
        resources.insert(
            "cpu".into(),
            json!({ "quota": quota, "period": CPU_PERIOD_US }),
        );
    }
    if let Some(p) = limits.pids {
        resources.insert("pids".into(), json!({ "limit": p }));
    }

    let mut body = json!({
        "name": name,
        "image": spec.image,
        "env": spec.env,
        "labels": container_labels(spec),
        "cap_drop": ["ALL"],
        "cap_add": h.cap_add,
        "no_new_privileges": h.no_new_privileges,
        "read_only_filesystem": h.read_only_rootfs,
        "privileged": false,
        "resource_limits": resources,
        "r_limits": [
            { "type": "nofile", "soft": ulimits.nofile, "hard": ulimits.nofile },
            { "type": "nproc", "soft": ulimits.nproc, "hard": ulimits.nproc },
        ],
        "netns": netns,
        "log_configuration": { "driver": "none" },
        "terminal": false,
        "stdin": false,
        "remove": false,
        // Podman copies the host's proxy variables into containers by default; plugins get only `env`.
        "httpproxy": false,
        "env_host": false,
        "systemd": "false",
    });
    let Some(obj) = body.as_object_mut() else {
        return Err(PodmanError::Unexpected {
            op: "building the create body",
            message: "not a JSON object".into(),
        });
    };
    if !spec.argv.is_empty() {
        obj.insert("command".into(), json!(spec.argv));
    }
    if let Some(user) = &h.user {
        obj.insert("user".into(), json!(user));
    }
    if let Some(networks) = networks {
        obj.insert("Networks".into(), networks);
    }
    if h.tmpfs_bytes > 0 {
        let tmpfs = tmpfs_options(h.tmpfs_bytes);
        let options: Vec<&str> = tmpfs.split(',').collect();
        let mounts: Vec<_> = std::iter::once("/tmp")
            .chain(h.writable_paths.iter().map(String::as_str))
            .map(|d| json!({ "destination": d, "type": "tmpfs", "source": "tmpfs", "options": options }))
            .collect();
        obj.insert("mounts".into(), json!(mounts));
    }
    if let Some(ep) = &spec.entrypoint {
        obj.insert("entrypoint".into(), json!([ENTRYPOINT_PATH]));
        obj.insert(
            "volumes".into(),
            json!([{ "Name": ep.volume, "Dest": ENTRYPOINT_DIR, "Options": ["ro", "nocopy"] }]),
        );
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kat_core::runtime::LABEL_MANAGED;

    #[test]
    fn hardened_defaults_reach_the_spec_generator() {
        let spec = kat_runtime_engine::testing::sample_spec();
        let b = create_body(&spec, "t-1", Ulimits::default()).expect("valid spec");
        assert_eq!(b["name"], "t-1");
        assert_eq!(b["image"], "kat-busybox:latest");
        assert_eq!(b["command"], json!(["echo", "hi"]));
        assert_eq!(b["entrypoint"], json!(["/plugin/entrypoint"]));
        assert_eq!(b["env"], json!({ "A": "b c" }));
        assert_eq!(b["user"], "65534:65534");
        assert_eq!(b["labels"][LABEL_MANAGED], "true");
        assert_eq!(b["labels"]["kat.task"], "x");
        assert_eq!(b["cap_drop"], json!(["ALL"]));
        assert_eq!(b["cap_add"], json!(["NET_RAW"]));
        // The key the service reads (podman-api's builder misspells it).
        assert_eq!(b["no_new_privileges"], true);
        assert_eq!(b["read_only_filesystem"], true);
        assert_eq!(b["privileged"], false);
        assert_eq!(b["terminal"], false);
        assert_eq!(b["httpproxy"], false);
        assert_eq!(
            b["mounts"],
            json!([{ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                     "options": ["rw", "nosuid", "nodev", "noexec", "size=1073741824", "mode=1777"] }])
        );
        assert_eq!(
            b["volumes"],
            json!([{ "Name": "plugin-entrypoint", "Dest": "/plugin", "Options": ["ro", "nocopy"] }])
        );
        let mut with_paths = spec.clone();
        with_paths.hardening.writable_paths = vec!["/var/cache/tool".into()];
        let w = create_body(&with_paths, "t-2", Ulimits::default()).expect("valid spec");
        assert_eq!(w["mounts"][1]["destination"], "/var/cache/tool");
        assert_eq!(w["mounts"][1]["options"], w["mounts"][0]["options"]);
        assert_eq!(
            b["resource_limits"],
            json!({ "memory": { "limit": 1u64 << 30, "swap": 1u64 << 30 },
                    "cpu": { "quota": 100_000, "period": 100_000 },
                    "pids": { "limit": 256 } })
        );
        assert_eq!(
            b["r_limits"],
            json!([{ "type": "nofile", "soft": 1024, "hard": 1024 },
                   { "type": "nproc", "soft": 1024, "hard": 1024 }])
        );
        assert_eq!(b["netns"], json!({ "nsmode": "host" }));
        assert_eq!(b["log_configuration"], json!({ "driver": "none" }));
    }

    #[test]
    fn networks() {
        let mut spec = ContainerSpec::new("t", "img", ["x"]);
        let b = create_body(&spec, "n", Ulimits::default()).expect("valid");
        assert_eq!(b["netns"], json!({ "nsmode": "none" }));
        spec.network = NetworkMode::Named("kat-net".into());
        let b = create_body(&spec, "n", Ulimits::default()).expect("valid");
        assert_eq!(b["netns"], json!({ "nsmode": "bridge" }));
        assert_eq!(b["Networks"], json!({ "kat-net": {} }));
    }

    #[test]
    fn empty_argv_keeps_the_image_command_and_no_user_the_images_user() {
        let mut spec = ContainerSpec::new("t", "img", Vec::<String>::new());
        spec.hardening.user = None;
        spec.hardening.tmpfs_bytes = 0;
        spec.limits = Default::default();
        spec.limits.memory_bytes = None;
        spec.limits.nano_cpus = None;
        spec.limits.pids = None;
        let b = create_body(&spec, "n", Ulimits::default()).expect("valid");
        assert!(b.get("command").is_none());
        assert!(b.get("entrypoint").is_none());
        assert!(b.get("user").is_none());
        assert!(b.get("mounts").is_none());
        assert_eq!(b["resource_limits"], json!({}));
    }

    #[test]
    fn bad_specs_are_rejected() {
        let mut spec = ContainerSpec::new("t", "img", ["x"]);
        spec.env.insert("A=B".into(), "v".into());
        assert!(matches!(
            create_body(&spec, "n", Ulimits::default()),
            Err(PodmanError::Spec { field: "env", .. })
        ));
    }

    #[test]
    fn ulimits_stay_within_the_hard_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             96365                512                  processes\n\
                      Max open files            20000                20000                files\n";
        let u = Ulimits {
            nofile: 4096,
            nproc: 1024,
        }
        .within(limits);
        assert_eq!(
            u,
            Ulimits {
                nofile: 4096,
                nproc: 512
            }
        );
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(Ulimits::default().within(unlimited), Ulimits::default());
        assert_eq!(Ulimits::default().within(""), Ulimits::default());
    }
}
