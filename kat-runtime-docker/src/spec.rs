//! Turning a [`ContainerSpec`] into the engine's container configuration (pure functions, unit-tested).

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, MountVolumeOptions,
};
use kat_core::runtime::{ContainerSpec, ENTRYPOINT_DIR, ENTRYPOINT_PATH};
use kat_runtime_engine::{check_spec, container_labels, tmpfs_options};

use crate::error::DockerError;

/// The engine's create body for `spec`: hardened host config, our labels, the read-only entrypoint mount.
pub(crate) fn create_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, DockerError> {
    let limits = check_spec(spec)?;
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let labels: HashMap<String, String> = container_labels(spec).into_iter().collect();
    let h = &spec.hardening;
    let mut tmpfs = HashMap::new();
    if h.tmpfs_bytes > 0 {
        tmpfs.insert("/tmp".to_string(), tmpfs_options(h.tmpfs_bytes));
        for p in &h.writable_paths {
            tmpfs.insert(p.clone(), tmpfs_options(h.tmpfs_bytes));
        }
    }
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

    let host_config = HostConfig {
        cap_drop: Some(vec!["ALL".to_string()]),
        cap_add: (!h.cap_add.is_empty()).then(|| h.cap_add.clone()),
        security_opt: h
            .no_new_privileges
            .then(|| vec!["no-new-privileges".to_string()]),
        readonly_rootfs: Some(h.read_only_rootfs),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        privileged: Some(false),
        memory: limits.memory_bytes,
        // No swap beyond the memory limit.
        memory_swap: limits.memory_bytes,
        nano_cpus: limits.nano_cpus,
        pids_limit: limits.pids,
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
    use kat_core::runtime::LABEL_MANAGED;

    #[test]
    fn hardened_defaults_reach_the_host_config() {
        let spec = kat_runtime_engine::testing::sample_spec();
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
        let mut spec = spec;
        spec.hardening.writable_paths = vec!["/var/cache/tool".into()];
        let hc = create_body(&spec)
            .expect("valid spec")
            .host_config
            .expect("host config");
        let tmpfs = hc.tmpfs.expect("tmpfs");
        assert_eq!(tmpfs.len(), 2);
        assert_eq!(tmpfs.get("/var/cache/tool"), tmpfs.get("/tmp"));
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
