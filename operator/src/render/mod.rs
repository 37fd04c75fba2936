//! Pure rendering: from a `Plugin` and what it was granted to the objects the operator applies.
//!
//! No client and no clock: the same input always gives the same objects, so `berth render`,
//! the controller and the snapshot tests agree byte for byte.

mod job;
mod network;
mod rbac;
mod workload;

use std::collections::BTreeMap;

use berth_api::{Permissions, Plugin, Problem, ResolvedResources};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use serde::Serialize;

pub use job::{
    BENCH_CONTAINER, BENCHMARK_LABEL, BenchOptions, DEFAULT_BENCH_IMAGE, JOB_TTL_SECONDS,
    bench_args, bench_job_name, render_bench_job,
};
pub use network::render_network_policy;
pub use rbac::{render_role, render_role_binding};
pub use workload::{
    TOKEN_KEY, render_deployment, render_service, render_service_account, render_token_secret,
    token_secret_name,
};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "berth-operator";
/// `app.kubernetes.io/managed-by` value on every rendered object.
pub const MANAGED_BY: &str = "berth-operator";
/// Label naming the plugin an object belongs to.
pub const PLUGIN_LABEL: &str = "berth.dev/plugin";
/// Pod-template label and Deployment annotation carrying the revision number.
pub const REVISION_ANNOTATION: &str = "berth.dev/revision";
/// Deployment annotation with the permissions (JSON) the running revision was rendered with.
pub const PERMISSIONS_ANNOTATION: &str = "berth.dev/granted-permissions";
/// Pod-template annotation with the digest (`sha256:HEX`) of the revision's credential, so
/// that a credential issued again (its Secret was lost) restarts the pods that carry the old one.
pub const CREDENTIAL_ANNOTATION: &str = "berth.dev/credential-sha256";
/// Name of the container that runs the plugin.
pub const CONTAINER_NAME: &str = "plugin";
/// Name of the container port.
pub const PORT_NAME: &str = "http";
/// UID and GID every plugin runs as.
pub const PLUGIN_UID: i64 = 65532;

/// Where plugins reach the egress proxy unless told otherwise: the chart's gateway Service
/// (release `berth` in `berth-system`) on its `egress` port.
pub const DEFAULT_EGRESS_PROXY: &str = "berth-gateway.berth-system.svc:7401";
/// The egress proxy's port on the gateway pods unless told otherwise.
pub const DEFAULT_EGRESS_PROXY_PORT: u16 = 7401;

/// Cluster facts the rendering needs; set from the operator's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    /// URL plugins reach the gateway at (`BERTH_GATEWAY_URL`).
    pub gateway_url: String,
    /// Namespace the gateway pods run in.
    pub gateway_namespace: String,
    /// Labels that select the gateway pods.
    pub gateway_labels: BTreeMap<String, String>,
    /// Port of the gateway pods (egress from plugins to the gateway).
    pub gateway_port: u16,
    /// The gateway's egress proxy as plugins reach it (`host:port`, their `HTTP_PROXY`);
    /// `None` renders no proxy variables and no proxy port in the NetworkPolicy.
    pub egress_proxy: Option<String>,
    /// Port of the egress proxy on the gateway pods (egress from plugins to the proxy).
    pub egress_proxy_port: u16,
    /// Namespace of the cluster DNS pods.
    pub dns_namespace: String,
    /// Labels that select the cluster DNS pods.
    pub dns_labels: BTreeMap<String, String>,
    /// Seconds a rollout may take before the operator rolls it back.
    pub progress_deadline_seconds: i32,
    /// Namespace for objects whose Plugin has none (only `berth render` needs it).
    pub default_namespace: String,
    /// `kubernetes.io/dockerconfigjson` Secrets (in the plugin's namespace) the kubelet pulls
    /// plugin images with: the same ones the operator resolves and verifies with.
    pub image_pull_secrets: Vec<String>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            gateway_url: "http://berth-gateway.berth-system.svc:8080".into(),
            gateway_namespace: "berth-system".into(),
            gateway_labels: BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "berth-gateway".to_string(),
            )]),
            gateway_port: 8080,
            egress_proxy: Some(DEFAULT_EGRESS_PROXY.into()),
            egress_proxy_port: DEFAULT_EGRESS_PROXY_PORT,
            dns_namespace: "kube-system".into(),
            dns_labels: BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())]),
            progress_deadline_seconds: 300,
            default_namespace: "default".into(),
            image_pull_secrets: Vec::new(),
        }
    }
}

/// Which image and version to run, and under which revision number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionToRun {
    /// Revision number (starts at 1).
    pub number: i64,
    /// Image reference, pinned to a digest when one is known.
    pub image: String,
    /// Plugin version of that revision.
    pub version: String,
}

impl RevisionToRun {
    /// The plugin's current spec as revision `number`.
    pub fn of_spec(plugin: &Plugin, number: i64) -> Self {
        Self {
            number,
            image: plugin.spec.image.clone(),
            version: plugin.spec.version.clone(),
        }
    }
}

/// Everything the rendering reads.
#[derive(Clone, Copy, Debug)]
pub struct RenderInput<'a> {
    /// The plugin (its spec must be valid).
    pub plugin: &'a Plugin,
    /// The permissions it may use: its request once approved; never more than it asked for.
    pub granted: &'a Permissions,
    /// What to run.
    pub revision: &'a RevisionToRun,
    /// Cluster facts.
    pub options: &'a RenderOptions,
}

/// The objects of one plugin, in the order they are applied.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rendered {
    /// The plugin's own identity.
    pub service_account: ServiceAccount,
    /// Only when a Kubernetes permission is granted.
    pub role: Option<Role>,
    /// Only when a Kubernetes permission is granted.
    pub role_binding: Option<RoleBinding>,
    /// The plugin's port inside the cluster.
    pub service: Service,
    /// Ingress from the gateway only; egress to DNS, the gateway and granted networks.
    pub network_policy: NetworkPolicy,
    /// The workload.
    pub deployment: Deployment,
}

impl Rendered {
    /// Every object as JSON, in apply order.
    pub fn to_values(&self) -> Vec<serde_json::Value> {
        let mut out = vec![to_value(&self.service_account)];
        if let Some(role) = &self.role {
            out.push(to_value(role));
        }
        if let Some(binding) = &self.role_binding {
            out.push(to_value(binding));
        }
        out.push(to_value(&self.service));
        out.push(to_value(&self.network_policy));
        out.push(to_value(&self.deployment));
        out
    }

    /// Every object as one multi-document YAML stream.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for value in self.to_values() {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&value).expect("rendered objects serialize"));
        }
        out
    }
}

fn to_value<T: Serialize>(object: &T) -> serde_json::Value {
    serde_json::to_value(object).expect("rendered objects serialize")
}

/// Renders every object of a plugin.
///
/// Fails only when the limits cannot be parsed, which validation reports first.
pub fn render(input: RenderInput<'_>) -> Result<Rendered, Vec<Problem>> {
    let resources = input.plugin.spec.resources.resolve()?;
    Ok(render_resolved(input, &resources))
}

fn render_resolved(input: RenderInput<'_>, resources: &ResolvedResources) -> Rendered {
    let kube_access = !input.granted.kubernetes.is_empty();
    Rendered {
        service_account: render_service_account(input.plugin, input.options, kube_access),
        role: kube_access.then(|| render_role(input.plugin, input.options, input.granted)),
        role_binding: kube_access.then(|| render_role_binding(input.plugin, input.options)),
        service: render_service(input.plugin, input.options),
        network_policy: render_network_policy(input.plugin, input.options, input.granted),
        deployment: render_deployment(input, resources),
    }
}

/// The labels on every object of a plugin.
pub fn common_labels(plugin: &Plugin, version: &str) -> BTreeMap<String, String> {
    let name = plugin.name().to_string();
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), name.clone()),
        ("app.kubernetes.io/instance".to_string(), name.clone()),
        (
            "app.kubernetes.io/version".to_string(),
            label_value(version),
        ),
        ("app.kubernetes.io/component".to_string(), "plugin".into()),
        ("app.kubernetes.io/part-of".to_string(), "berth".into()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
        (PLUGIN_LABEL.to_string(), name),
    ])
}

/// The labels that select a plugin's pods (stable across revisions).
pub fn selector_labels(plugin: &Plugin) -> BTreeMap<String, String> {
    BTreeMap::from([(PLUGIN_LABEL.to_string(), plugin.name().to_string())])
}

/// A semver string as a label value: `+` is not allowed there, and at most 63 characters.
fn label_value(s: &str) -> String {
    let mut v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    while v.ends_with(['-', '_', '.']) {
        v.pop();
    }
    v
}

/// The namespace objects go to.
pub fn namespace_of<'a>(plugin: &'a Plugin, options: &'a RenderOptions) -> &'a str {
    plugin
        .metadata
        .namespace
        .as_deref()
        .unwrap_or(&options.default_namespace)
}

/// Metadata shared by every object: name, namespace, labels and the owner reference.
///
/// A plugin without a UID (read from a file, not the API) gets no owner reference.
fn object_meta(plugin: &Plugin, options: &RenderOptions, version: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(plugin.name().to_string()),
        namespace: Some(namespace_of(plugin, options).to_string()),
        labels: Some(common_labels(plugin, version)),
        owner_references: owner_reference(plugin),
        ..ObjectMeta::default()
    }
}

fn owner_reference(plugin: &Plugin) -> Option<Vec<OwnerReference>> {
    plugin.metadata.uid.as_ref()?;
    plugin.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = Some(true);
        vec![o]
    })
}

/// Where the gateway reaches a plugin: `http://NAME.NAMESPACE.svc:PORT`.
pub fn endpoint(plugin: &Plugin, options: &RenderOptions) -> String {
    format!(
        "http://{}.{}.svc:{}",
        plugin.name(),
        namespace_of(plugin, options),
        plugin.spec.port
    )
}

#[cfg(test)]
mod tests;
