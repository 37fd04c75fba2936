//! What a plugin asks to touch. Everything is denied unless listed here and granted.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Requested (in a `Plugin`) or granted (in a `PluginGrant`) permissions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Permissions {
    /// Outbound network access.
    #[serde(default, skip_serializing_if = "NetworkPermissions::is_empty")]
    pub network: NetworkPermissions,
    /// Directories mounted into the plugin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filesystem: Vec<FilesystemMount>,
    /// Secrets exposed as environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRef>,
    /// Other plugins' capabilities this plugin may call through the gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginCall>,
    /// Kubernetes API access (a namespaced Role in cluster mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kubernetes: Vec<KubernetesRule>,
}

impl Permissions {
    /// True when nothing is requested.
    pub fn is_empty(&self) -> bool {
        self.network.is_empty()
            && self.filesystem.is_empty()
            && self.secrets.is_empty()
            && self.plugins.is_empty()
            && self.kubernetes.is_empty()
    }
}

/// Outbound network access.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPermissions {
    /// Destinations the plugin may connect to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
}

impl NetworkPermissions {
    /// True when no egress is requested.
    pub fn is_empty(&self) -> bool {
        self.egress.is_empty()
    }
}

/// One allowed destination: a host name (or `*.domain`, or `*` for any) or a CIDR, and ports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    /// DNS name, `*.example.com` for any subdomain, or `*` for any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// IPv4 or IPv6 network, e.g. `10.20.0.0/16`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub cidr: Option<String>,
    /// Destination ports (1–65535); at least one.
    #[schemars(length(min = 1, max = 64))]
    pub ports: Vec<u16>,
}

/// A directory mounted into the plugin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilesystemMount {
    /// Volume name: a named volume locally, a PersistentVolumeClaim in a cluster.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// Absolute path inside the container (not `/`).
    #[schemars(length(min = 2, max = 4096))]
    pub mount_path: String,
    /// `readOnly` (default) or `readWrite`.
    #[serde(default)]
    pub access: Access,
}

/// Mount access.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Access {
    /// Read only.
    #[default]
    ReadOnly,
    /// Read and write.
    ReadWrite,
}

impl Access {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ReadOnly => "readOnly",
            Access::ReadWrite => "readWrite",
        }
    }
}

/// A secret exposed to the plugin as an environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Secret name (a Kubernetes Secret, or an entry of the local secrets file).
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub name: String,
    /// Environment variable that receives the value.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub env: String,
    /// Key within the secret; defaults to `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Capabilities of another plugin this one may invoke.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginCall {
    /// The other plugin.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// Capability names, or `*` for all of them.
    #[schemars(length(min = 1))]
    pub capabilities: Vec<String>,
}

/// One RBAC rule, applied in the plugin's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesRule {
    /// API groups (`""` is the core group).
    #[serde(default)]
    pub api_groups: Vec<String>,
    /// Resources, e.g. `configmaps`.
    #[schemars(length(min = 1))]
    pub resources: Vec<String>,
    /// Verbs, e.g. `get`, `list`, `watch`.
    #[schemars(length(min = 1))]
    pub verbs: Vec<String>,
    /// Restrict to these object names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
}
