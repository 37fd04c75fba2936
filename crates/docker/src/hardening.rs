//! From a `Plugin` manifest to the container configuration that enforces it.
//!
//! Pure: the same manifest always gives the same configuration, and no engine is needed to
//! check it. Every plugin container gets Berth's isolation defaults: user 65532, a read-only
//! root filesystem, all capabilities dropped, no-new-privileges, a size-limited `/tmp`, and
//! the manifest's memory, CPU and process limits.

use std::collections::HashMap;

use berth_api::Plugin;
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};

use crate::PLUGIN_USER;
use crate::error::{Error, Result};

/// Where the container runs and what it is told, beyond what the manifest says.
#[derive(Clone, Debug, Default)]
pub struct ContainerOptions {
    /// Image reference to run.
    pub image: String,
    /// Network to attach to.
    pub network: String,
    /// Extra environment (`BERTH_GATEWAY_URL`, `BERTH_PLUGIN_TOKEN`, …).
    pub env: Vec<(String, String)>,
    /// Labels for the container.
    pub labels: HashMap<String, String>,
    /// Give each `permissions.filesystem` mount an empty tmpfs of the `/tmp` size instead
    /// of a host directory (conformance tests: the plugin sees its mount paths, nothing real).
    pub scratch_filesystem: bool,
}

/// The container configuration for `plugin` under `options`.
pub fn plugin_container(
    plugin: &Plugin,
    options: &ContainerOptions,
) -> Result<ContainerCreateBody> {
    let limits = plugin.spec.resources.resolve().map_err(|problems| {
        let first = problems.into_iter().next();
        Error::Manifest {
            field: first
                .as_ref()
                .map(|p| p.path.clone())
                .unwrap_or_else(|| "spec.resources".into()),
            message: first.map(|p| p.message).unwrap_or_default(),
        }
    })?;
    let memory = i64::try_from(limits.memory_bytes).map_err(|_| Error::Manifest {
        field: "spec.resources.memory".into(),
        message: "too large".into(),
    })?;
    let mut tmpfs = HashMap::from([(
        "/tmp".to_owned(),
        format!("rw,noexec,nosuid,nodev,size={}", limits.tmp_bytes),
    )]);
    if options.scratch_filesystem {
        for mount in &plugin.spec.permissions.filesystem {
            tmpfs.insert(
                mount.mount_path.clone(),
                format!(
                    "rw,noexec,nosuid,nodev,size={},uid=65532,gid=65532,mode=0755",
                    limits.tmp_bytes
                ),
            );
        }
    }
    let mut env = vec![
        format!("BERTH_PORT={}", plugin.spec.port),
        format!("BERTH_PLUGIN_NAME={}", plugin.name()),
        format!("BERTH_PLUGIN_VERSION={}", plugin.spec.version),
    ];
    env.extend(options.env.iter().map(|(k, v)| format!("{k}={v}")));
    Ok(ContainerCreateBody {
        image: Some(options.image.clone()),
        user: Some(PLUGIN_USER.into()),
        env: Some(env),
        labels: Some(options.labels.clone()),
        stop_signal: Some("SIGTERM".into()),
        host_config: Some(HostConfig {
            memory: Some(memory),
            // No swap: the memory limit is the whole budget.
            memory_swap: Some(memory),
            nano_cpus: Some((limits.cpu_millis as i64).saturating_mul(1_000_000)),
            pids_limit: Some(limits.pids),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            tmpfs: Some(tmpfs),
            network_mode: Some(options.network.clone()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::{Manifest, load_manifests};

    fn plugin(yaml: &str) -> Plugin {
        let loaded = load_manifests("test.yaml", yaml.as_bytes());
        assert!(!loaded.has_errors(), "{:?}", loaded.problems);
        match loaded.documents.into_iter().next().unwrap().manifest {
            Manifest::Plugin(p) => *p,
            Manifest::Grant(_) => panic!("not a plugin"),
        }
    }

    const CALC: &str = r#"
apiVersion: berth.dev/v1alpha1
kind: Plugin
metadata: {name: calc}
spec:
  image: berth/calc:0.1.0
  version: 0.1.0
  port: 9000
  resources: {cpu: 250m, memory: 32Mi, pids: 16, tmp: 1Mi}
  permissions:
    filesystem: [{name: ws, mountPath: /workspace, access: readWrite}]
"#;

    fn options(scratch: bool) -> ContainerOptions {
        ContainerOptions {
            image: "berth/calc:0.1.0".into(),
            network: "berth-test".into(),
            env: vec![("BERTH_GATEWAY_URL".into(), "http://gw:8080".into())],
            labels: HashMap::from([("dev.berth.managed-by".into(), "test".into())]),
            scratch_filesystem: scratch,
        }
    }

    #[test]
    fn manifest_limits_become_engine_limits() {
        let body = plugin_container(&plugin(CALC), &options(false)).unwrap();
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(32 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.nano_cpus, Some(250_000_000));
        assert_eq!(host.pids_limit, Some(16));
        assert_eq!(
            host.tmpfs.unwrap()["/tmp"],
            "rw,noexec,nosuid,nodev,size=1048576"
        );
        assert_eq!(host.network_mode.as_deref(), Some("berth-test"));
    }

    #[test]
    fn every_container_gets_the_isolation_defaults() {
        let body = plugin_container(&plugin(CALC), &options(false)).unwrap();
        assert_eq!(body.user.as_deref(), Some("65532:65532"));
        let host = body.host_config.unwrap();
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges:true".to_owned()])
        );
    }

    #[test]
    fn defaults_apply_when_the_manifest_sets_no_limits() {
        let yaml = CALC.replace(
            "  resources: {cpu: 250m, memory: 32Mi, pids: 16, tmp: 1Mi}\n",
            "",
        );
        let host = plugin_container(&plugin(&yaml), &options(false))
            .unwrap()
            .host_config
            .unwrap();
        assert_eq!(host.memory, Some(128 * 1024 * 1024));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.pids_limit, Some(64));
    }

    #[test]
    fn runtime_environment_names_the_port_plugin_and_extras() {
        let env = plugin_container(&plugin(CALC), &options(false))
            .unwrap()
            .env
            .unwrap();
        assert_eq!(
            env,
            [
                "BERTH_PORT=9000",
                "BERTH_PLUGIN_NAME=calc",
                "BERTH_PLUGIN_VERSION=0.1.0",
                "BERTH_GATEWAY_URL=http://gw:8080"
            ]
        );
    }

    #[test]
    fn filesystem_mounts_become_scratch_tmpfs_only_when_asked() {
        let plain = plugin_container(&plugin(CALC), &options(false)).unwrap();
        assert!(
            !plain
                .host_config
                .unwrap()
                .tmpfs
                .unwrap()
                .contains_key("/workspace")
        );
        let scratch = plugin_container(&plugin(CALC), &options(true)).unwrap();
        let tmpfs = scratch.host_config.unwrap().tmpfs.unwrap();
        assert!(tmpfs["/workspace"].contains("uid=65532"), "{tmpfs:?}");
    }
}
