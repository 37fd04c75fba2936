//! From a `Plugin` manifest to the container configuration that enforces it.
//!
//! Pure: the same manifest always gives the same configuration, and no engine is needed to
//! check it. Every plugin container gets Berth's isolation defaults: user 65532, a read-only
//! root filesystem, all capabilities dropped, no-new-privileges, the engine's default seccomp
//! profile, a size-limited `/tmp`, no published ports, and the manifest's memory, CPU and
//! process limits. Each `permissions.filesystem` entry becomes a mount of the source the
//! caller bound to it, read-only unless the manifest asks for `readWrite`.

use std::collections::HashMap;
use std::path::PathBuf;

use berth_api::Plugin;
use berth_api::permissions::Access;
use berth_contract::env::{DeploymentFacts, EnvSource, GatewayAccess, plugin_environment};
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, RestartPolicy, RestartPolicyNameEnum,
};

use crate::PLUGIN_USER;
use crate::error::{Error, Result};

/// Where the container runs and what it is told, beyond what the manifest says.
#[derive(Clone, Debug, Default)]
pub struct ContainerOptions {
    /// Image reference to run.
    pub image: String,
    /// Network to attach to.
    pub network: String,
    /// The plugin's whole environment, as [`container_env`] builds it.
    pub env: Vec<(String, String)>,
    /// Labels for the container.
    pub labels: HashMap<String, String>,
    /// What backs each `permissions.filesystem` entry, by its `name`.
    pub filesystem: HashMap<String, FilesystemSource>,
    /// Give each `permissions.filesystem` entry without a source in
    /// [`ContainerOptions::filesystem`] an empty tmpfs of the `/tmp` size (conformance
    /// tests: the plugin sees its mount paths, nothing real).
    pub scratch_filesystem: bool,
}

/// What a `permissions.filesystem` entry is mounted from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilesystemSource {
    /// A named Docker volume.
    Volume(String),
    /// A directory on the host (it must exist).
    HostDir(PathBuf),
}

/// Local secrets: the parsed secrets file (`NAME=value` or `NAME.KEY=value` lines) and how
/// to name it in an error.
#[derive(Clone, Copy, Debug)]
pub struct LocalSecrets<'a> {
    /// Entries by `NAME` or `NAME.KEY`.
    pub values: &'a HashMap<String, String>,
    /// The file, as a user would name it.
    pub file: &'a str,
}

/// How a local plugin reaches its gateway: literal values, since Docker has no secret
/// references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginGateway {
    /// The gateway's base URL on the plugin's network, e.g. `http://172.20.0.2:7400`.
    pub url: String,
    /// The plugin's own token (`BERTH_PLUGIN_TOKEN`).
    pub token: String,
    /// The egress proxy's `host:port` on the plugin's network; `None`: no proxy variables.
    pub egress_proxy: Option<String>,
}

/// A plugin container's environment as `(name, value)` pairs, from the one definition in
/// `berth-contract`: the protocol's variables (with the gateway's URL and the plugin's
/// token, and the proxy variables when it has an egress proxy, when `gateway` is given),
/// then each of `permissions.secrets` looked up in
/// `secrets`. Without `secrets` (a plugin run alone by `berth plugin test`) no secret is
/// given. The first secret missing from the file is an error naming its field.
pub fn container_env(
    plugin: &Plugin,
    gateway: Option<PluginGateway>,
    secrets: Option<LocalSecrets<'_>>,
) -> std::result::Result<Vec<(String, String)>, String> {
    let facts = DeploymentFacts {
        gateway: gateway.map(|gateway| GatewayAccess {
            url: gateway.url,
            token: EnvSource::Value(gateway.token),
            egress_proxy: gateway.egress_proxy,
        }),
    };
    let wanted = match secrets {
        Some(_) => plugin.spec.permissions.secrets.as_slice(),
        None => &[],
    };
    let mut secret_index = 0;
    plugin_environment(plugin, &facts, wanted)
        .into_iter()
        .map(|var| match (var.source, secrets) {
            (EnvSource::Value(value), _) => Ok((var.name, value)),
            (EnvSource::Secret { name, key, .. }, Some(secrets)) => {
                let i = secret_index;
                secret_index += 1;
                let entry = match key {
                    Some(k) => format!("{name}.{k}"),
                    None => name,
                };
                match secrets.values.get(&entry) {
                    Some(value) => Ok((var.name, value.clone())),
                    None => Err(format!(
                        "spec.permissions.secrets[{i}]: secret {entry:?} is not in {} (add a line `{entry}=…`)",
                        secrets.file
                    )),
                }
            }
            (EnvSource::Secret { .. }, None) => Err(format!(
                "{}: no secrets are given to a plugin run alone",
                var.name
            )),
        })
        .collect()
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
    let mut mounts = Vec::new();
    for (i, permission) in plugin.spec.permissions.filesystem.iter().enumerate() {
        let (typ, source) = match options.filesystem.get(&permission.name) {
            Some(FilesystemSource::Volume(name)) => (MountType::VOLUME, name.clone()),
            Some(FilesystemSource::HostDir(dir)) => (MountType::BIND, dir.display().to_string()),
            None if options.scratch_filesystem => {
                tmpfs.insert(
                    permission.mount_path.clone(),
                    format!(
                        "rw,noexec,nosuid,nodev,size={},uid=65532,gid=65532,mode=0755",
                        limits.tmp_bytes
                    ),
                );
                continue;
            }
            None => {
                return Err(Error::Manifest {
                    field: format!("spec.permissions.filesystem[{i}]"),
                    message: format!(
                        "nothing is bound to {:?} (mountPath {}); bind it to a host directory or a volume, or remove the permission from the manifest",
                        permission.name, permission.mount_path
                    ),
                });
            }
        };
        mounts.push(Mount {
            target: Some(permission.mount_path.clone()),
            source: Some(source),
            typ: Some(typ),
            read_only: Some(permission.access == Access::ReadOnly),
            ..Default::default()
        });
    }
    let env: Vec<String> = options
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
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
            // No seccomp option: the engine's default profile (RuntimeDefault) applies.
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            tmpfs: Some(tmpfs),
            mounts: (!mounts.is_empty()).then_some(mounts),
            // Nothing is published: only the gateway, on the plugin's network, reaches it.
            publish_all_ports: Some(false),
            port_bindings: None,
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
            env: container_env(
                &plugin(CALC),
                Some(PluginGateway {
                    url: "http://gw:8080".into(),
                    token: "t0ken".into(),
                    egress_proxy: None,
                }),
                None,
            )
            .unwrap(),
            labels: HashMap::from([("dev.berth.managed-by".into(), "test".into())]),
            filesystem: HashMap::new(),
            scratch_filesystem: scratch,
        }
    }

    fn with_source(name: &str, source: FilesystemSource) -> ContainerOptions {
        let mut o = options(false);
        o.filesystem.insert(name.into(), source);
        o
    }

    /// Options that bind CALC's one filesystem permission to a volume.
    fn bound() -> ContainerOptions {
        with_source("ws", FilesystemSource::Volume("berth-x-calc-ws".into()))
    }

    #[test]
    fn manifest_limits_become_engine_limits() {
        let body = plugin_container(&plugin(CALC), &bound()).unwrap();
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
        let body = plugin_container(&plugin(CALC), &bound()).unwrap();
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
        let host = plugin_container(&plugin(&yaml), &bound())
            .unwrap()
            .host_config
            .unwrap();
        assert_eq!(host.memory, Some(128 * 1024 * 1024));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.pids_limit, Some(64));
    }

    #[test]
    fn runtime_environment_names_the_port_plugin_and_extras() {
        let env = plugin_container(&plugin(CALC), &bound())
            .unwrap()
            .env
            .unwrap();
        assert_eq!(
            env,
            [
                "BERTH_PORT=9000",
                "BERTH_PLUGIN_NAME=calc",
                "BERTH_PLUGIN_VERSION=0.1.0",
                "BERTH_MAX_CONCURRENCY=64",
                "BERTH_MEMORY_BYTES=33554432",
                "BERTH_CPU_MILLIS=250",
                "BERTH_PIDS=16",
                "BERTH_TIMEOUT_MS=10000",
                "BERTH_TMP_BYTES=1048576",
                "BERTH_GATEWAY_URL=http://gw:8080",
                "BERTH_PLUGIN_TOKEN=t0ken"
            ]
        );
    }

    #[test]
    fn a_plugin_run_alone_still_sees_its_limits() {
        let yaml = CALC.replace("tmp: 1Mi}", "tmp: 1Mi, timeout: 2s, maxConcurrency: 3}");
        let env = container_env(&plugin(&yaml), None, None).unwrap();
        let get = |name: &str| {
            env.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{name} is not set: {env:?}"))
        };
        assert_eq!(get("BERTH_MAX_CONCURRENCY"), "3");
        assert_eq!(get("BERTH_TIMEOUT_MS"), "2000");
        assert_eq!(get("BERTH_MEMORY_BYTES"), "33554432");
        assert_eq!(get("BERTH_CPU_MILLIS"), "250");
        assert_eq!(get("BERTH_PIDS"), "16");
        assert_eq!(get("BERTH_TMP_BYTES"), "1048576");
        assert!(env.iter().all(|(n, _)| n != "BERTH_GATEWAY_URL"));
    }

    #[test]
    fn secrets_file_entries_become_plugin_env() {
        let yaml = CALC.replace(
            "  permissions:\n",
            "  permissions:\n    secrets: [{name: db, key: password, env: DB_PASSWORD}, {name: api, env: API_KEY}]\n",
        );
        let p = plugin(&yaml);
        let values = HashMap::from([
            ("db.password".to_owned(), "pw=1".to_owned()),
            ("api".to_owned(), "abc".to_owned()),
        ]);
        let secrets = LocalSecrets {
            values: &values,
            file: "s.env",
        };
        let env = container_env(&p, None, Some(secrets)).unwrap();
        assert_eq!(
            env[env.len() - 2..],
            [
                ("DB_PASSWORD".to_owned(), "pw=1".to_owned()),
                ("API_KEY".to_owned(), "abc".to_owned())
            ]
        );
        let empty = HashMap::new();
        let missing = container_env(
            &p,
            None,
            Some(LocalSecrets {
                values: &empty,
                file: "s.env",
            }),
        )
        .unwrap_err();
        assert!(
            missing.starts_with("spec.permissions.secrets[0]: ")
                && missing.contains("db.password")
                && missing.contains("s.env"),
            "{missing}"
        );
        let alone = container_env(&p, None, None).unwrap();
        assert_eq!(
            alone.len(),
            env.len() - 2,
            "a plugin run alone gets no secrets: {alone:?}"
        );
    }

    #[test]
    fn filesystem_mounts_become_scratch_tmpfs_when_asked() {
        let scratch = plugin_container(&plugin(CALC), &options(true)).unwrap();
        let host = scratch.host_config.unwrap();
        let tmpfs = host.tmpfs.unwrap();
        assert!(tmpfs["/workspace"].contains("uid=65532"), "{tmpfs:?}");
        assert_eq!(host.mounts, None);
    }

    #[test]
    fn a_filesystem_permission_without_a_source_names_the_entry_and_the_fix() {
        let err = plugin_container(&plugin(CALC), &options(false)).unwrap_err();
        let Error::Manifest { field, message } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(field, "spec.permissions.filesystem[0]");
        assert!(
            message.contains("\"ws\"") && message.contains("/workspace"),
            "{err}"
        );
        assert!(
            message.contains("bind it to a host directory or a volume"),
            "{err}"
        );
    }

    #[test]
    fn a_volume_source_becomes_a_volume_mount_at_the_mount_path() {
        let body = plugin_container(
            &plugin(CALC),
            &with_source("ws", FilesystemSource::Volume("berth-x-calc-ws".into())),
        )
        .unwrap();
        let host = body.host_config.unwrap();
        assert_eq!(
            host.mounts.unwrap(),
            [Mount {
                target: Some("/workspace".into()),
                source: Some("berth-x-calc-ws".into()),
                typ: Some(MountType::VOLUME),
                read_only: Some(false),
                ..Default::default()
            }]
        );
        assert!(!host.tmpfs.unwrap().contains_key("/workspace"));
    }

    #[test]
    fn a_read_only_permission_becomes_a_read_only_bind_mount() {
        let yaml = CALC.replace("access: readWrite", "access: readOnly");
        let body = plugin_container(
            &plugin(&yaml),
            &with_source("ws", FilesystemSource::HostDir("/srv/project".into())),
        )
        .unwrap();
        let mounts = body.host_config.unwrap().mounts.unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert_eq!(mounts[0].source.as_deref(), Some("/srv/project"));
        assert_eq!(mounts[0].target.as_deref(), Some("/workspace"));
        assert_eq!(mounts[0].read_only, Some(true));
    }

    #[test]
    fn a_source_wins_over_scratch_and_others_stay_scratch() {
        let yaml = CALC.replace(
            "filesystem: [{name: ws, mountPath: /workspace, access: readWrite}]",
            "filesystem: [{name: ws, mountPath: /workspace, access: readWrite}, {name: cache, mountPath: /cache}]",
        );
        let mut o = with_source("ws", FilesystemSource::Volume("v".into()));
        o.scratch_filesystem = true;
        let host = plugin_container(&plugin(&yaml), &o)
            .unwrap()
            .host_config
            .unwrap();
        assert_eq!(host.mounts.unwrap()[0].source.as_deref(), Some("v"));
        let tmpfs = host.tmpfs.unwrap();
        assert!(tmpfs.contains_key("/cache") && !tmpfs.contains_key("/workspace"));
    }

    #[test]
    fn nothing_is_published_and_seccomp_stays_the_engine_default() {
        let body = plugin_container(&plugin(CALC), &options(true)).unwrap();
        assert!(body.exposed_ports.is_none());
        let host = body.host_config.unwrap();
        assert_eq!(host.port_bindings, None);
        assert_eq!(host.publish_all_ports, Some(false));
        assert!(
            !host
                .security_opt
                .unwrap()
                .iter()
                .any(|o| o.starts_with("seccomp")),
            "no seccomp override"
        );
        assert_eq!(host.privileged, None);
        assert_eq!(host.cap_add, None);
    }
}
