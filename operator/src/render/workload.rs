//! Deployment, Service and ServiceAccount.

use std::collections::BTreeMap;

use berth_api::resources::{format_cpu, format_memory};
use berth_api::{Access, Plugin, ResolvedResources};
use berth_contract::env::{DeploymentFacts, EnvSource, GatewayAccess, plugin_environment};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, LocalObjectReference, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    CONTAINER_NAME, PERMISSIONS_ANNOTATION, PLUGIN_UID, PORT_NAME, REVISION_ANNOTATION,
    RenderInput, RenderOptions, common_labels, object_meta, selector_labels,
};

/// Name of the writable, memory-backed volume on `/tmp`.
const TMP_VOLUME: &str = "tmp";
/// Key of the plugin's gateway token in its token Secret.
pub const TOKEN_KEY: &str = "token";

/// The Secret holding the gateway identity (`BERTH_PLUGIN_TOKEN`) of one revision of a
/// plugin: each revision's pods get a token of their own.
pub fn token_secret_name(plugin: &Plugin, revision: i64) -> String {
    format!("{}-berth-token-{revision}", plugin.name())
}

/// The Secret of one revision's credential: an immutable Secret holding the token under
/// [`TOKEN_KEY`], labelled and owned like every other object of the plugin. The only place
/// the token is ever written.
pub fn render_token_secret(
    plugin: &Plugin,
    options: &RenderOptions,
    revision: i64,
    token: &str,
) -> Secret {
    let mut metadata = object_meta(plugin, options, &plugin.spec.version);
    metadata.name = Some(token_secret_name(plugin, revision));
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert(REVISION_ANNOTATION.to_string(), revision.to_string());
    }
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// The plugin's ServiceAccount; its token is mounted only when a Kubernetes permission is granted.
pub fn render_service_account(
    plugin: &Plugin,
    options: &RenderOptions,
    kube_access: bool,
) -> ServiceAccount {
    ServiceAccount {
        metadata: object_meta(plugin, options, &plugin.spec.version),
        automount_service_account_token: Some(kube_access),
        ..ServiceAccount::default()
    }
}

/// A ClusterIP Service on the plugin's port.
pub fn render_service(plugin: &Plugin, options: &RenderOptions) -> Service {
    Service {
        metadata: object_meta(plugin, options, &plugin.spec.version),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(plugin)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                protocol: Some("TCP".into()),
                port: i32::from(plugin.spec.port),
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The workload: hardened to the *restricted* Pod Security Standard, with limits, probes and
/// a rolling update that never drops below the wanted number of ready pods.
pub fn render_deployment(input: RenderInput<'_>, resources: &ResolvedResources) -> Deployment {
    let RenderInput {
        plugin,
        granted,
        revision,
        options,
    } = input;
    let kube_access = !granted.kubernetes.is_empty();
    let replicas = if plugin.spec.enabled {
        plugin.spec.replicas
    } else {
        0
    };

    let mut pod_labels = common_labels(plugin, &revision.version);
    pod_labels.insert(REVISION_ANNOTATION.into(), revision.number.to_string());

    let mut meta = object_meta(plugin, options, &revision.version);
    meta.annotations = Some(BTreeMap::from([
        (REVISION_ANNOTATION.to_string(), revision.number.to_string()),
        (
            PERMISSIONS_ANNOTATION.to_string(),
            serde_json::to_string(granted).expect("permissions serialize"),
        ),
    ]));

    let limits = BTreeMap::from([
        (
            "cpu".to_string(),
            Quantity(format_cpu(resources.cpu_millis)),
        ),
        (
            "memory".to_string(),
            Quantity(format_memory(resources.memory_bytes)),
        ),
    ]);
    // Memory is requested in full so a plugin is never OOM-killed for a neighbour's sake;
    // CPU is compressible, so a quarter is reserved and the rest is borrowed when free.
    let requests = BTreeMap::from([
        (
            "cpu".to_string(),
            Quantity(format_cpu((resources.cpu_millis / 4).max(10))),
        ),
        (
            "memory".to_string(),
            Quantity(format_memory(resources.memory_bytes)),
        ),
    ]);

    let mut volumes = vec![Volume {
        name: TMP_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity(format_memory(resources.tmp_bytes))),
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: TMP_VOLUME.into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }];
    for mount in &granted.filesystem {
        let read_only = mount.access == Access::ReadOnly;
        let volume = format!("fs-{}", mount.name);
        volumes.push(Volume {
            name: volume.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: mount.name.clone(),
                read_only: Some(read_only),
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: mount.mount_path.clone(),
            read_only: Some(read_only),
            ..VolumeMount::default()
        });
    }

    let deployment = DeploymentFacts {
        gateway: Some(GatewayAccess {
            url: options.gateway_url.clone(),
            // The operator creates the revision's Secret before the Deployment that names it;
            // a pod without its token could reach neither other plugins nor the proxy.
            token: EnvSource::Secret {
                name: token_secret_name(plugin, revision.number),
                key: Some(TOKEN_KEY.into()),
                optional: false,
            },
            egress_proxy: options.egress_proxy.clone(),
        }),
    };
    let env: Vec<EnvVar> = plugin_environment(plugin, &deployment, &granted.secrets)
        .into_iter()
        .map(kubernetes_env)
        .collect();

    let probe = |period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::String(PORT_NAME.into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };

    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(revision.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: i32::from(plugin.spec.port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(env),
        resources: Some(ResourceRequirements {
            limits: Some(limits),
            requests: Some(requests),
            ..ResourceRequirements::default()
        }),
        readiness_probe: Some(probe(5, 3)),
        liveness_probe: Some(probe(10, 3)),
        startup_probe: Some(probe(2, 30)),
        security_context: Some(hardened_container()),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };

    Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            revision_history_limit: Some(3),
            progress_deadline_seconds: Some(options.progress_deadline_seconds),
            selector: LabelSelector {
                match_labels: Some(selector_labels(plugin)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(plugin.name().to_string()),
                    automount_service_account_token: Some(kube_access),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(PLUGIN_UID),
                        run_as_group: Some(PLUGIN_UID),
                        fs_group: Some(PLUGIN_UID),
                        seccomp_profile: Some(runtime_default()),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    image_pull_secrets: (!options.image_pull_secrets.is_empty()).then(|| {
                        options
                            .image_pull_secrets
                            .iter()
                            .map(|name| LocalObjectReference { name: name.clone() })
                            .collect()
                    }),
                    volumes: Some(volumes),
                    termination_grace_period_seconds: Some(30),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The container security context of every pod Berth renders (plugins and benchmark
/// Jobs): non-root, read-only root filesystem, no capabilities, no privilege escalation,
/// the runtime's default seccomp profile.
pub(super) fn hardened_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(PLUGIN_UID),
        run_as_group: Some(PLUGIN_UID),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

pub(super) fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// A plugin variable as a container's `env` entry: a value, or a `secretKeyRef` (key
/// `value` when the manifest names none).
fn kubernetes_env(var: berth_contract::env::EnvVar) -> EnvVar {
    match var.source {
        EnvSource::Value(value) => EnvVar {
            name: var.name,
            value: Some(value),
            value_from: None,
        },
        EnvSource::Secret {
            name,
            key,
            optional,
        } => EnvVar {
            name: var.name,
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name,
                    key: key.unwrap_or_else(|| "value".into()),
                    optional: optional.then_some(true),
                }),
                ..EnvVarSource::default()
            }),
        },
    }
}
