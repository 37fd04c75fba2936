//! The `Plugin` custom resource (`berth.dev/v1alpha1`): one manifest for both backends.

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::permissions::Permissions;
use crate::quantity::{DurationString, Quantity};
use crate::risk::RiskAssessment;

/// Default memory limit when a manifest gives none.
pub const DEFAULT_MEMORY: &str = "128Mi";
/// Default CPU limit when a manifest gives none.
pub const DEFAULT_CPU: &str = "500m";
/// Default process limit when a manifest gives none.
pub const DEFAULT_PIDS: i64 = 64;
/// Default size of the `/tmp` tmpfs when a manifest gives none.
pub const DEFAULT_TMP: &str = "16Mi";
/// Default per-invocation deadline when a manifest gives none.
pub const DEFAULT_TIMEOUT: &str = "10s";
/// Default number of invocations in flight per plugin when a manifest gives none.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 64;
/// Default port a plugin serves protocol v1 on.
pub const DEFAULT_PORT: u16 = 8080;
/// Default hook priority; lower numbers run first.
pub const DEFAULT_HOOK_PRIORITY: i32 = 100;

/// What a plugin is, does, may touch and may use.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Plugin",
    namespaced,
    shortname = "plg",
    derive = "PartialEq",
    doc = "A plugin: an OCI image plus what it does, may touch, may use and may talk to.",
    status = "PluginStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Risk","type":"string","jsonPath":".status.risk.tier"}"#,
    printcolumn = r#"{"name":"Tier","type":"string","jsonPath":".status.liveTier.tier"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSpec {
    /// OCI image reference: a tag (`registry/berth/calculator:0.1.0`) or a digest (`@sha256:…`).
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Semantic version of the plugin; must match the version the image reports.
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"))]
    pub version: String,
    /// One line on what the plugin is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// `false` keeps the plugin installed but stopped.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Port the plugin serves protocol v1 on.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// What callers can invoke.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<Capability>,
    /// Events the plugin subscribes to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookSubscription>,
    /// What the plugin asks to touch; nothing unless listed.
    #[serde(default, skip_serializing_if = "Permissions::is_empty")]
    pub permissions: Permissions,
    /// Limits; absent fields take the documented defaults.
    #[serde(default)]
    pub resources: Resources,
    /// Number of instances (0 stops it without disabling it).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Plugins that must be Ready first, with a semver range each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
    /// Warm standby: pause the plugin (its memory kept) once idle, wake it on the next call.
    /// Off when absent; only `berth dev up` acts on it so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<Standby>,
}

fn default_true() -> bool {
    true
}
fn default_port() -> u16 {
    DEFAULT_PORT
}
fn default_replicas() -> i32 {
    1
}

/// Something callers can invoke: `POST /v1/invoke/{name}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capability {
    /// Lower-case name, unique within the plugin.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_-]{0,62}$"))]
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the input; the gateway rejects input that does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "json_schema_document")]
    pub input: Option<Value>,
    /// JSON Schema of the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "json_schema_document")]
    pub output: Option<Value>,
    /// Safe to retry: the gateway may call it again after a transport failure.
    #[serde(default)]
    pub idempotent: bool,
    /// Example inputs (and expected outputs) used by docs and `berth plugin test`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<CapabilityExample>,
}

/// One example call of a capability.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapabilityExample {
    /// What the example shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The input document.
    #[schemars(schema_with = "any_json")]
    pub input: Value,
    /// The expected output, when it is deterministic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json")]
    pub output: Option<Value>,
}

/// A subscription to a hook event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookSubscription {
    /// A name from the catalogue (`before_command`, …) or `custom.<name>`.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]*$|^custom\.[a-z0-9][a-z0-9_.-]*$"))]
    pub name: String,
    /// `filter` may modify or veto the event; `observe` is only told.
    #[serde(default)]
    pub mode: HookMode,
    /// Order among filter subscribers of the same hook: lower runs first.
    #[serde(default = "default_priority")]
    #[schemars(range(min = -10000, max = 10000))]
    pub priority: i32,
    /// What a `filter` that cannot answer (error, timeout, not ready) does to the event:
    /// `Ignore` lets it through, `Fail` vetoes it. Only `filter` subscriptions may say `Fail`.
    #[serde(default, skip_serializing_if = "FailurePolicy::is_ignore")]
    #[schemars(extend("default" = "Ignore"))]
    pub failure_policy: FailurePolicy,
}

fn default_priority() -> i32 {
    DEFAULT_HOOK_PRIORITY
}

/// How a subscriber takes part in a hook.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HookMode {
    /// May modify the event or veto it; runs in priority order.
    Filter,
    /// Notified concurrently; cannot change the outcome.
    #[default]
    Observe,
}

impl HookMode {
    /// The wire name: `filter` or `observe`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookMode::Filter => "filter",
            HookMode::Observe => "observe",
        }
    }
}

/// What the gateway does with the event when a filter subscriber gives no valid answer.
///
/// Named after the field of Kubernetes admission webhooks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum FailurePolicy {
    /// Skip the subscriber and let the event through unchanged (fail open).
    #[default]
    Ignore,
    /// Veto the event, naming the subscriber and its failure (fail closed).
    Fail,
}

impl FailurePolicy {
    /// The manifest spelling: `Ignore` or `Fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Ignore => "Ignore",
            FailurePolicy::Fail => "Fail",
        }
    }

    /// True for the default, `Ignore`.
    pub fn is_ignore(&self) -> bool {
        *self == FailurePolicy::Ignore
    }
}

/// Resource limits. Every plugin runs with limits: absent fields take the defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPU limit (`500m` = half a core).
    #[serde(default = "default_cpu")]
    pub cpu: Quantity,
    /// Memory limit (`128Mi`); the plugin is OOM-killed beyond it.
    #[serde(default = "default_memory")]
    pub memory: Quantity,
    /// Maximum number of processes and threads.
    #[serde(default = "default_pids")]
    #[schemars(range(min = 1, max = 32768))]
    pub pids: i64,
    /// Size of the writable `/tmp` (memory-backed).
    #[serde(default = "default_tmp")]
    pub tmp: Quantity,
    /// Deadline of one invocation; callers may ask for less, never more.
    #[serde(default = "default_timeout")]
    pub timeout: DurationString,
    /// Invocations in flight at once; more are refused with 429.
    #[serde(default = "default_max_concurrency")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_concurrency: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu: default_cpu(),
            memory: default_memory(),
            pids: DEFAULT_PIDS,
            tmp: default_tmp(),
            timeout: default_timeout(),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
        }
    }
}

fn default_cpu() -> Quantity {
    Quantity::new(DEFAULT_CPU)
}
fn default_memory() -> Quantity {
    Quantity::new(DEFAULT_MEMORY)
}
fn default_pids() -> i64 {
    DEFAULT_PIDS
}
fn default_tmp() -> Quantity {
    Quantity::new(DEFAULT_TMP)
}
fn default_timeout() -> DurationString {
    DurationString::new(DEFAULT_TIMEOUT)
}
fn default_max_concurrency() -> u32 {
    DEFAULT_MAX_CONCURRENCY
}

/// Warm standby of a plugin: frozen after `idleAfter` without calls, thawed by the next one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Standby {
    /// How long without calls before the plugin is paused (`5m`); at least `1s`.
    pub idle_after: DurationString,
}

/// Shortest `spec.standby.idleAfter`: pausing sooner costs more wakes than it saves memory.
pub const MIN_STANDBY_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

impl Standby {
    /// The parsed `idleAfter`, with the rule it breaks when it is not a duration of at
    /// least [`MIN_STANDBY_IDLE`].
    pub fn idle_after(&self) -> Result<std::time::Duration, crate::quantity::ParseError> {
        let idle = self.idle_after.duration()?;
        if idle < MIN_STANDBY_IDLE {
            return Err(crate::quantity::ParseError {
                message: format!(
                    "{:?} is shorter than the minimum of 1s: a plugin paused sooner spends more time waking than sleeping",
                    self.idle_after.0
                ),
                hint: "write a duration of at least \"1s\", such as \"5m\"".into(),
            });
        }
        Ok(idle)
    }
}

/// Another plugin that must be Ready first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dependency {
    /// The other plugin's name (same namespace).
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// A semver range the other plugin's version must satisfy (`>=1.0.0, <2.0.0`); any version when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Where a plugin is in its life.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum Phase {
    /// Accepted, not yet acted on.
    Pending,
    /// Asks for more than auto-approval allows; waits for a `PluginGrant`.
    AwaitingApproval,
    /// A revision is starting.
    Deploying,
    /// Serving.
    Ready,
    /// Serving an older revision, or restarting after failures.
    Degraded,
    /// Cannot run; the conditions say why.
    Failed,
    /// `enabled: false`.
    Disabled,
}

impl Phase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::AwaitingApproval,
        Phase::Deploying,
        Phase::Ready,
        Phase::Degraded,
        Phase::Failed,
        Phase::Disabled,
    ];

    /// The name used in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::AwaitingApproval => "AwaitingApproval",
            Phase::Deploying => "Deploying",
            Phase::Ready => "Ready",
            Phase::Degraded => "Degraded",
            Phase::Failed => "Failed",
            Phase::Disabled => "Disabled",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the operator or the Docker backend last observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginStatus {
    /// Summary of the conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Validated, PermissionsGranted, DependenciesReady, Available, Progressing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Risk of the requested permissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<RiskAssessment>,
    /// Digest the running revision is pinned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// The last supply-chain check of the wanted image: the digest its tag resolved to and,
    /// where the platform requires a signature, who signed it or why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<ImageVerification>,
    /// Where the gateway reaches the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Revisions, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<Revision>,
    /// The last benchmark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance: Option<Performance>,
    /// The tier the gateway derives from live traffic (written by the gateway, not the
    /// operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_tier: Option<crate::bench::LiveTier>,
    /// Digests of the plugin's gateway credentials (`BERTH_PLUGIN_TOKEN`), one per revision
    /// whose pods may still run; the tokens themselves are only in Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<PluginCredential>,
}

/// The supply-chain check of one image digest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageVerification {
    /// The image as the spec names it.
    pub image: String,
    /// `sha256:HEX` of the image manifest the reference resolved to, when it resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Whether the platform requires this plugin to be signed.
    pub signature_required: bool,
    /// `True` when signed by a trusted key (or no signature is required and the digest
    /// resolved), `False` when refused, `Unknown` while the registry cannot answer.
    pub verified: ConditionStatus,
    /// The trusted key that signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// CamelCase reason of a refusal or failure, e.g. `Unsigned`, `UntrustedSignature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What was found and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339 time of the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
}

/// The digest of the credential a revision's pods carry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginCredential {
    /// The revision whose pods carry it.
    pub revision: i64,
    /// `sha256:HEX` of the token: not secret, what the gateway looks tokens up by.
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub sha256: String,
}

/// A Kubernetes-style condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Validated`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339 time the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// Generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Condition truth value.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Not known yet.
    Unknown,
}

/// One deployed (or attempted) revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// Increases by one on each change of image or version.
    pub revision: i64,
    /// The plugin version of that revision.
    pub version: String,
    /// The image reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The digest it ran as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// What became of it.
    pub outcome: RevisionOutcome,
    /// Why, for failures and rollbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What became of a revision.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RevisionOutcome {
    /// Being rolled out.
    Progressing,
    /// Serving.
    Active,
    /// Replaced by a newer revision.
    Superseded,
    /// Failed readiness or its progress deadline; the previous revision was kept.
    RolledBack,
    /// Held until a grant covers its permissions.
    AwaitingApproval,
}

/// The last benchmark's result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Performance {
    /// Platinum, Gold, Silver or Bronze.
    pub tier: String,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: f64,
    /// Fraction of failed invocations (0..1).
    pub error_rate: f64,
    /// Invocations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<f64>,
    /// RFC 3339 time of the measurement.
    pub measured_at: String,
}

/// A JSON Schema document: an object the API server keeps as it is.
fn json_schema_document(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "A JSON Schema (draft 2020-12) document."
    })
}

/// Any JSON value.
fn any_json(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-preserve-unknown-fields": true
    })
}

impl Plugin {
    /// The plugin's name (`metadata.name`), empty when missing.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// The capability with this name.
    pub fn capability(&self, name: &str) -> Option<&Capability> {
        self.spec.capabilities.iter().find(|c| c.name == name)
    }
}
