//! Berth's plugin model, shared by the Docker backend, the operator and the gateway.
//!
//! Pure: no I/O, no Docker, no Kubernetes client. It holds the `Plugin` and `PluginGrant`
//! custom resources, parsing of quantities and durations, semantic validation, risk
//! scoring with grant coverage, permission diffs and the approval decision both backends
//! share, and dependency ordering.

pub mod approval;
pub mod bench;
pub mod benchmark;
pub mod crd;
pub mod deps;
pub mod grant;
pub mod hooks;
pub mod image_ref;
pub mod load;
pub mod permissions;
pub mod plugin;
pub mod problem;
pub mod quantity;
pub mod resources;
pub mod risk;
pub mod validate;

pub use bench::{BenchReport, LiveTier, Tier, TierThresholds, TierVerdict};
pub use benchmark::{
    BenchmarkPhase, PluginBenchmark, PluginBenchmarkSpec, PluginBenchmarkStatus, validate_benchmark,
};
pub use grant::{GrantState, PluginGrant, PluginGrantSpec, PluginGrantStatus};
pub use load::{Document, Loaded, Manifest, load_manifests};
pub use permissions::{
    Access, EgressRule, FilesystemMount, KubernetesRule, NetworkPermissions, Permissions,
    PluginCall, SecretRef,
};
pub use plugin::{
    Capability, CapabilityExample, Condition, ConditionStatus, Dependency, FailurePolicy, HookMode,
    HookSubscription, ImageVerification, Performance, Phase, Plugin, PluginCredential, PluginSpec,
    PluginStatus, Resources, Revision, RevisionOutcome, Standby,
};
pub use problem::{Problem, Severity};
pub use quantity::{DurationString, Quantity};
pub use resources::ResolvedResources;
pub use risk::{RiskAssessment, RiskTier, assess};
pub use validate::{validate_grant, validate_plugin};
