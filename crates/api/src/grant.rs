//! `PluginGrant`: a platform operator's approval of a plugin's permissions.

use jiff::Timestamp;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::permissions::Permissions;
use crate::plugin::Condition;

/// Separation of duties: a plugin requests, a `PluginGrant` grants.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "PluginGrant",
    namespaced,
    shortname = "pgr",
    derive = "PartialEq",
    doc = "An approval of permissions for one plugin, by a platform operator.",
    status = "PluginGrantStatus",
    printcolumn = r#"{"name":"Plugin","type":"string","jsonPath":".spec.plugin"}"#,
    printcolumn = r#"{"name":"Granted-By","type":"string","jsonPath":".spec.grantedBy"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".spec.expiresAt"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginGrantSpec {
    /// The plugin (same namespace) this grant is for.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub plugin: String,
    /// What is granted; a request is covered when every item of it is covered here.
    #[serde(default)]
    pub permissions: Permissions,
    /// Who approved it.
    #[schemars(length(min = 1, max = 256))]
    pub granted_by: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub reason: Option<String>,
    /// RFC 3339 time after which the grant no longer covers anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: Option<String>,
}

/// State of a grant, as the operator last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginGrantStatus {
    /// `Active`, `Expired` or `Orphaned` (no such plugin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<GrantState>,
    /// Conditions, e.g. `PluginFound`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// State of a grant.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GrantState {
    /// Covers its plugin now.
    Active,
    /// Past `expiresAt`.
    Expired,
    /// Names a plugin that does not exist.
    Orphaned,
}

impl PluginGrantSpec {
    /// The expiry time, if any and if it parses.
    pub fn expiry(&self) -> Option<Result<Timestamp, jiff::Error>> {
        self.expires_at.as_deref().map(str::parse)
    }

    /// True when the grant has an expiry at or before `now` (or an unreadable one).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        match self.expiry() {
            None => false,
            Some(Ok(at)) => at <= now,
            Some(Err(_)) => true,
        }
    }
}
