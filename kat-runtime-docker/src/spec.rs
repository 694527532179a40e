//! Turning a [`ContainerSpec`] into the engine's container configuration (pure functions, unit-tested).

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, MountVolumeOptions,
};
use kat_core::runtime::{ContainerSpec, ENTRYPOINT_DIR, ENTRYPOINT_PATH, LABEL_MANAGED};

use crate::error::DockerError;

/// The longest container name we create (the random suffix included).
const MAX_NAME: usize = 128;

/// A valid, unique container name derived from the requested one.
///
/// Docker accepts `[a-zA-Z0-9][a-zA-Z0-9_.-]+`: any other character becomes `-`, a name that does not start
/// with a letter or digit gets a `kat-` prefix, and a random suffix makes it unique even when two runs ask for
/// the same name at the same moment (the original's `plugin_ts` names could collide).
pub(crate) fn container_name(requested: &str) -> String {
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
    base.truncate(MAX_NAME - suffix.len() - 1);
    format!("{base}-{suffix}")
}

/// Whether `name` is a valid Docker volume name.
pub(crate) fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && name.len() <= 255
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

/// The `fromImage` and `tag` to pull `image` with. Without a tag or digest the engine would pull every
/// tag of the repository, so `latest` is made explicit the way `docker pull` does.
pub(crate) fn pull_reference(image: &str) -> (String, Option<String>) {
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

fn to_i64(field: &'static str, v: u64) -> Result<i64, DockerError> {
    i64::try_from(v).map_err(|_| DockerError::Spec {
        field,
        message: format!("{v} is too large"),
    })
}

/// Linux capability names: `NET_RAW` or `CAP_NET_RAW`, letters, digits and `_`.
fn valid_capability(cap: &str) -> bool {
    !cap.is_empty()
        && cap
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The tmpfs options of the `/tmp` mount: sticky world-writable, no devices, no set-uid, no exec, bounded.
pub(crate) fn tmpfs_options(bytes: u64) -> String {
    format!("rw,nosuid,nodev,noexec,size={bytes},mode=1777")
}

/// The engine's create body for `spec`: hardened host config, our labels, the read-only entrypoint mount.
pub(crate) fn create_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, DockerError> {
    if spec.image.trim().is_empty() {
        return Err(DockerError::Spec {
            field: "image",
            message: "empty image reference".into(),
        });
    }
    let mut env = Vec::with_capacity(spec.env.len());
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(DockerError::Spec {
                field: "env",
                message: format!("invalid variable name {k:?}"),
            });
        }
        if v.contains('\0') {
            return Err(DockerError::Spec {
                field: "env",
                message: format!("the value of {k} contains a NUL byte"),
            });
        }
        env.push(format!("{k}={v}"));
    }
    if let Some(i) = spec.argv.iter().position(|a| a.contains('\0')) {
        return Err(DockerError::Spec {
            field: "argv",
            message: format!("argument {i} contains a NUL byte"),
        });
    }
    let mut labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_MANAGED.to_string(), "true".to_string());

    let h = &spec.hardening;
    if let Some(bad) = h.cap_add.iter().find(|c| !valid_capability(c)) {
        return Err(DockerError::Spec {
            field: "hardening.cap_add",
            message: format!("not a capability name: {bad:?}"),
        });
    }
    let mut tmpfs = HashMap::new();
    if h.tmpfs_bytes > 0 {
        tmpfs.insert("/tmp".to_string(), tmpfs_options(h.tmpfs_bytes));
    }
    let memory = spec
        .limits
        .memory_bytes
        .map(|m| to_i64("limits.memory_bytes", m))
        .transpose()?;
    let mounts = spec.entrypoint.as_ref().map(|ep| {
        vec![Mount {
            target: Some(ENTRYPOINT_DIR.to_string()),
            source: Some(ep.volume.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(true),
            volume_options: Some(MountVolumeOptions {
                no_copy: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });
    if let Some(ep) = &spec.entrypoint
        && !valid_volume_name(&ep.volume)
    {
        return Err(DockerError::Spec {
            field: "entrypoint.volume",
            message: format!("not a valid volume name: {:?}", ep.volume),
        });
    }

    let host_config = HostConfig {
        cap_drop: Some(vec!["ALL".to_string()]),
        cap_add: (!h.cap_add.is_empty()).then(|| h.cap_add.clone()),
        security_opt: h
            .no_new_privileges
            .then(|| vec!["no-new-privileges".to_string()]),
        readonly_rootfs: Some(h.read_only_rootfs),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        privileged: Some(false),
        memory,
        // No swap beyond the memory limit.
        memory_swap: memory,
        nano_cpus: spec
            .limits
            .nano_cpus
            .map(|c| to_i64("limits.nano_cpus", c))
            .transpose()?,
        pids_limit: spec.limits.pids.map(i64::from),
        network_mode: Some(spec.network.as_str().to_string()),
        mounts,
        auto_remove: Some(false),
        // Output is read over attach; the engine keeps no log files for containers that are removed anyway
        // (and a chatty plugin cannot fill the disk).
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".to_string()),
            config: None,
        }),
        ..Default::default()
    };

    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.argv.is_empty()).then(|| spec.argv.clone()),
        entrypoint: spec
            .entrypoint
            .as_ref()
            .map(|_| vec![ENTRYPOINT_PATH.to_string()]),
        env: (!env.is_empty()).then_some(env),
        labels: Some(labels),
        user: h.user.clone(),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kat_core::runtime::{EntrypointMount, NetworkMode};

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
            assert!(a.len() <= MAX_NAME);
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
        assert!(container_name(&"x".repeat(500)).len() <= MAX_NAME);
    }

    #[test]
    fn volume_names() {
        assert!(valid_volume_name("plugin-entrypoint"));
        assert!(!valid_volume_name("-x"));
        assert!(!valid_volume_name("a/b"));
        assert!(!valid_volume_name("a"));
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
    fn hardened_defaults_reach_the_host_config() {
        let mut spec = ContainerSpec::new("t", "kat-busybox:latest", ["echo", "hi"]);
        spec.env.insert("A".into(), "b c".into());
        spec.labels.insert("kat.task".into(), "x".into());
        spec.hardening.cap_add = vec!["NET_RAW".into()];
        spec.network = NetworkMode::Host;
        spec.entrypoint = Some(EntrypointMount {
            volume: "plugin-entrypoint".into(),
            sha256: "00".into(),
        });
        let body = create_body(&spec).expect("valid spec");
        assert_eq!(body.cmd, Some(vec!["echo".into(), "hi".into()]));
        assert_eq!(body.entrypoint, Some(vec![ENTRYPOINT_PATH.to_string()]));
        assert_eq!(body.env, Some(vec!["A=b c".into()]));
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        assert_eq!(body.tty, Some(false));
        let labels = body.labels.expect("labels");
        assert_eq!(labels.get(LABEL_MANAGED).map(String::as_str), Some("true"));
        assert_eq!(labels.get("kat.task").map(String::as_str), Some("x"));
        let hc = body.host_config.expect("host config");
        assert_eq!(hc.cap_drop, Some(vec!["ALL".into()]));
        assert_eq!(hc.cap_add, Some(vec!["NET_RAW".into()]));
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".into()]));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(
            hc.tmpfs.expect("tmpfs").get("/tmp").map(String::as_str),
            Some("rw,nosuid,nodev,noexec,size=1073741824,mode=1777")
        );
        assert_eq!(hc.memory, Some(1 << 30));
        assert_eq!(hc.memory_swap, Some(1 << 30));
        assert_eq!(hc.nano_cpus, Some(1_000_000_000));
        assert_eq!(hc.pids_limit, Some(256));
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        let mounts = hc.mounts.expect("mounts");
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].target.as_deref(), Some("/plugin"));
        assert_eq!(mounts[0].source.as_deref(), Some("plugin-entrypoint"));
        assert_eq!(mounts[0].read_only, Some(true));
    }

    #[test]
    fn bad_specs_are_rejected() {
        let mut spec = ContainerSpec::new("t", "img", ["x"]);
        spec.env.insert("A=B".into(), "v".into());
        assert!(matches!(
            create_body(&spec),
            Err(DockerError::Spec { field: "env", .. })
        ));
        let mut spec = ContainerSpec::new("t", "img", ["x\0y"]);
        assert!(create_body(&spec).is_err());
        spec.argv = vec!["ok".into()];
        spec.hardening.cap_add = vec!["net raw".into()];
        assert!(create_body(&spec).is_err());
        let spec = ContainerSpec::new("t", " ", ["x"]);
        assert!(create_body(&spec).is_err());
    }

    #[test]
    fn empty_argv_keeps_the_image_command() {
        let spec = ContainerSpec::new("t", "img", Vec::<String>::new());
        let body = create_body(&spec).expect("valid");
        assert_eq!(body.cmd, None);
        assert_eq!(body.entrypoint, None);
    }
}
