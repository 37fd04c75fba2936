//! `PluginBenchmark`: one `berth bench` run in a cluster, carried out by the operator as a Job.

use std::time::Duration;

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bench::{BenchReport, Tier, TierThresholds};
use crate::plugin::Condition;
use crate::quantity::DurationString;

/// Longest measured part a benchmark may ask for.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Longest warm-up a benchmark may ask for.
pub const MAX_WARMUP: Duration = Duration::from_secs(600);
/// Most concurrent requests a benchmark may ask for.
pub const MAX_CONCURRENCY: u32 = 1024;
/// Highest open-loop rate a benchmark may ask for, in requests per second.
pub const MAX_RATE: u32 = 100_000;
/// Concurrency of a benchmark that names neither `concurrency` nor `rate`.
pub const DEFAULT_CONCURRENCY: u32 = 4;
/// Secret (key `token`) holding the gateway token when `spec.tokenSecret` is not set.
pub const DEFAULT_TOKEN_SECRET: &str = "berth-bench-token";

/// Measure one plugin through the gateway: a closed loop at `concurrency` or an open loop at
/// `rate`, for `duration` after `warmup`. The result lands in the status and, summarised, in
/// the Plugin's `status.performance`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "PluginBenchmark",
    namespaced,
    shortname = "pbench",
    derive = "PartialEq",
    doc = "A benchmark of one plugin through the gateway, run once by the operator as a Job.",
    status = "PluginBenchmarkStatus",
    printcolumn = r#"{"name":"Plugin","type":"string","jsonPath":".spec.plugin"}"#,
    printcolumn = r#"{"name":"Tier","type":"string","jsonPath":".status.tier"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginBenchmarkSpec {
    /// The plugin (same namespace) to measure.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub plugin: String,
    /// Capabilities to drive; empty drives every capability that has manifest examples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Input for every invocation instead of the capabilities' manifest examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json")]
    pub input: Option<Value>,
    /// Closed loop: this many requests in flight (default 4 when `rate` is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub concurrency: Option<u32>,
    /// Open loop: this many requests per second, latency measured from each request's
    /// intended send time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub rate: Option<u32>,
    /// Length of the measured part (default 30s, at most 1h).
    #[serde(default = "default_duration")]
    pub duration: DurationString,
    /// Warm-up before measuring, not counted (default 5s, at most 10m).
    #[serde(default = "default_warmup")]
    pub warmup: DurationString,
    /// Tier bounds; the seed's defaults when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<TierThresholds>,
    /// Secret in this namespace whose key `token` is a gateway token with the
    /// `invoke:PLUGIN` scope (default `berth-bench-token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub token_secret: Option<String>,
}

fn default_duration() -> DurationString {
    DurationString::new("30s")
}

fn default_warmup() -> DurationString {
    DurationString::new("5s")
}

/// Any JSON value, kept by the API server as it is.
fn any_json(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A report kept as the Job wrote it; its shape is [`BenchReport`].
fn report_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "The compact `berth bench` report (BenchReport without timeline and distribution)."
    })
}

/// Where a benchmark stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BenchmarkPhase {
    /// Accepted, the Job not created yet (e.g. waiting for the plugin to be Ready).
    Pending,
    /// The Job runs.
    Running,
    /// The Job finished with a report.
    Succeeded,
    /// Invalid spec, unknown plugin, failed Job or a Job without a report.
    Failed,
}

impl BenchmarkPhase {
    /// True once nothing more will happen.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// What the operator last saw of a benchmark.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginBenchmarkStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BenchmarkPhase>,
    /// Conditions: `Complete`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Job that runs `berth bench`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// RFC 3339 time the Job was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339 time the result (or the failure) was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The tier the run earned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// The report, without its timeline and distribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "report_schema")]
    pub result: Option<BenchReport>,
    /// Why it failed, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl PluginBenchmarkSpec {
    /// The measured part's length, once valid.
    pub fn duration(&self) -> Option<Duration> {
        self.duration.duration().ok()
    }

    /// The warm-up's length, once valid.
    pub fn warmup(&self) -> Option<Duration> {
        self.warmup.duration().ok()
    }

    /// The closed-loop concurrency to drive (the default when neither it nor `rate` is set).
    pub fn effective_concurrency(&self) -> Option<u32> {
        match (self.concurrency, self.rate) {
            (Some(c), _) => Some(c),
            (None, None) => Some(DEFAULT_CONCURRENCY),
            (None, Some(_)) => None,
        }
    }

    /// The Secret holding the gateway token.
    pub fn token_secret(&self) -> &str {
        self.token_secret.as_deref().unwrap_or(DEFAULT_TOKEN_SECRET)
    }
}

/// Problems of a benchmark's spec, each naming its field and the fix; empty when valid.
pub fn validate_benchmark(spec: &PluginBenchmarkSpec) -> Vec<String> {
    let mut problems = Vec::new();
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    if !name_ok(&spec.plugin) {
        problems.push(format!(
            "spec.plugin: {:?} is not a plugin name (lowercase letters, digits and '-', at most 63)",
            spec.plugin
        ));
    }
    for (i, c) in spec.capabilities.iter().enumerate() {
        if c.trim().is_empty() {
            problems.push(format!(
                "spec.capabilities[{i}]: empty; name a capability of the plugin"
            ));
        }
    }
    if spec.concurrency.is_some() && spec.rate.is_some() {
        problems.push(
            "spec: set either concurrency (closed loop) or rate (open loop), not both".into(),
        );
    }
    if let Some(c) = spec.concurrency
        && !(1..=MAX_CONCURRENCY).contains(&c)
    {
        problems.push(format!(
            "spec.concurrency: {c} is out of range; use 1 to {MAX_CONCURRENCY}"
        ));
    }
    if let Some(r) = spec.rate
        && !(1..=MAX_RATE).contains(&r)
    {
        problems.push(format!(
            "spec.rate: {r} is out of range; use 1 to {MAX_RATE} requests per second"
        ));
    }
    match spec.duration.duration() {
        Err(e) => problems.push(format!("spec.duration: {e}")),
        Ok(d) if d < Duration::from_secs(1) || d > MAX_DURATION => problems.push(format!(
            "spec.duration: {} is out of range; use 1s to 1h",
            spec.duration
        )),
        Ok(_) => {}
    }
    match spec.warmup.duration() {
        Err(e) => problems.push(format!("spec.warmup: {e}")),
        Ok(d) if d > MAX_WARMUP => problems.push(format!(
            "spec.warmup: {} is too long; use at most 10m",
            spec.warmup
        )),
        Ok(_) => {}
    }
    if let Some(t) = &spec.thresholds
        && let Err(e) = t.check()
    {
        problems.push(format!("spec.thresholds.{e}"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PluginBenchmarkSpec {
        serde_json::from_value(serde_json::json!({"plugin": "calculator"})).unwrap()
    }

    #[test]
    fn defaults_are_a_closed_loop_of_four_for_thirty_seconds() {
        let s = spec();
        assert!(validate_benchmark(&s).is_empty());
        assert_eq!(s.effective_concurrency(), Some(DEFAULT_CONCURRENCY));
        assert_eq!(s.duration(), Some(Duration::from_secs(30)));
        assert_eq!(s.warmup(), Some(Duration::from_secs(5)));
        assert_eq!(s.token_secret(), DEFAULT_TOKEN_SECRET);
    }

    #[test]
    fn an_open_loop_has_no_concurrency() {
        let s = PluginBenchmarkSpec {
            rate: Some(50),
            ..spec()
        };
        assert!(validate_benchmark(&s).is_empty());
        assert_eq!(s.effective_concurrency(), None);
    }

    #[test]
    fn bad_specs_are_refused_by_field() {
        let mut t = TierThresholds::default();
        t.gold.latency_ms = 1.0;
        let s = PluginBenchmarkSpec {
            plugin: "Calc".into(),
            capabilities: vec![" ".into()],
            concurrency: Some(0),
            rate: Some(10),
            duration: DurationString::new("2h"),
            warmup: DurationString::new("soon"),
            thresholds: Some(t),
            ..spec()
        };
        let problems = validate_benchmark(&s);
        let fields: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(
            fields,
            vec![
                "spec.plugin",
                "spec.capabilities[0]",
                "spec",
                "spec.concurrency",
                "spec.duration",
                "spec.warmup",
                "spec.thresholds.platinum",
            ],
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_value::<PluginBenchmarkSpec>(
            serde_json::json!({"plugin": "calculator", "concurency": 3}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("concurency"), "{e}");
    }
}
