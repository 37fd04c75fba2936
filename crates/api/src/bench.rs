//! Performance tiers and benchmark results, shared by `berth bench`, the gateway's live
//! tiers, the operator's `PluginBenchmark` and the HTML report.
//!
//! A tier is the worst of three ratings: latency (the configured quantile, p90 by
//! default), error ratio, and resource use against the plugin's limits (the higher of CPU
//! and peak memory). The defaults are Hearthlink's thresholds for latency and errors
//! (Platinum < 500 ms and < 0.1 %, Gold < 1 s and < 1 %, Silver < 2 s and < 5 %, Bronze
//! worse) plus resource thresholds that only demote a plugin running close to its limits
//! (docs/benchmarks.md, decision 0060).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A performance tier, best first.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum Tier {
    /// The best tier.
    Platinum,
    /// Second.
    Gold,
    /// Third.
    Silver,
    /// Worse than Silver on some measure.
    Bronze,
}

impl Tier {
    /// Every tier, best first.
    pub const ALL: [Tier; 4] = [Tier::Platinum, Tier::Gold, Tier::Silver, Tier::Bronze];

    /// The name used in status, metrics and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Platinum => "Platinum",
            Tier::Gold => "Gold",
            Tier::Silver => "Silver",
            Tier::Bronze => "Bronze",
        }
    }

    /// The value of the `berth_plugin_tier` gauge: 4 Platinum … 1 Bronze (0 is unrated).
    pub fn gauge_value(self) -> i64 {
        match self {
            Tier::Platinum => 4,
            Tier::Gold => 3,
            Tier::Silver => 2,
            Tier::Bronze => 1,
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown tier `{s}` (Platinum, Gold, Silver or Bronze)"))
    }
}

/// The upper bounds (exclusive) a plugin must stay under to reach one tier.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierLimit {
    /// Latency at the configured quantile, in milliseconds.
    pub latency_ms: f64,
    /// Failed invocations over all invocations (0..1).
    pub error_ratio: f64,
    /// CPU or peak memory used over the plugin's limit (0..1), whichever is higher.
    pub resource_ratio: f64,
}

/// Where each tier ends. A plugin under every bound of `platinum` is Platinum, else under
/// every bound of `gold` Gold, else under `silver` Silver, else Bronze.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierThresholds {
    /// The latency quantile the latency bounds apply to (0.5, 0.9, 0.99, …).
    #[serde(default = "default_quantile")]
    pub latency_quantile: f64,
    /// Bounds for Platinum.
    pub platinum: TierLimit,
    /// Bounds for Gold.
    pub gold: TierLimit,
    /// Bounds for Silver.
    pub silver: TierLimit,
}

fn default_quantile() -> f64 {
    0.9
}

impl Default for TierThresholds {
    fn default() -> Self {
        Self {
            latency_quantile: default_quantile(),
            platinum: TierLimit {
                latency_ms: 500.0,
                error_ratio: 0.001,
                resource_ratio: 0.8,
            },
            gold: TierLimit {
                latency_ms: 1000.0,
                error_ratio: 0.01,
                resource_ratio: 0.9,
            },
            silver: TierLimit {
                latency_ms: 2000.0,
                error_ratio: 0.05,
                resource_ratio: 0.95,
            },
        }
    }
}

impl TierThresholds {
    /// Checks that the quantile is in (0, 1) and that every bound is finite, not negative
    /// and does not shrink from Platinum to Silver. Errors name the field.
    pub fn check(&self) -> Result<(), String> {
        if !(self.latency_quantile > 0.0 && self.latency_quantile < 1.0) {
            return Err(format!(
                "latencyQuantile: {} is not between 0 and 1 (exclusive); use e.g. 0.9",
                self.latency_quantile
            ));
        }
        let tiers = [
            ("platinum", &self.platinum),
            ("gold", &self.gold),
            ("silver", &self.silver),
        ];
        for (name, limit) in tiers {
            for (field, v) in [
                ("latencyMs", limit.latency_ms),
                ("errorRatio", limit.error_ratio),
                ("resourceRatio", limit.resource_ratio),
            ] {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!("{name}.{field}: {v} must be a finite number ≥ 0"));
                }
            }
        }
        for ((lower, a), (higher, b)) in tiers.iter().zip(tiers.iter().skip(1)) {
            if a.latency_ms > b.latency_ms
                || a.error_ratio > b.error_ratio
                || a.resource_ratio > b.resource_ratio
            {
                return Err(format!(
                    "{lower}: each bound must be at most {higher}'s (a better tier cannot allow more)"
                ));
            }
        }
        Ok(())
    }

    /// Rates `inputs`: the worst of the latency, error and resource ratings, with the
    /// measures that held the plugin below Platinum.
    pub fn classify(&self, inputs: &TierInputs) -> TierVerdict {
        let rate = |value: f64, bound: fn(&TierLimit) -> f64| -> Tier {
            if value < bound(&self.platinum) {
                Tier::Platinum
            } else if value < bound(&self.gold) {
                Tier::Gold
            } else if value < bound(&self.silver) {
                Tier::Silver
            } else {
                Tier::Bronze
            }
        };
        let mut ratings = vec![
            (
                "latency",
                rate(inputs.latency_ms, |l| l.latency_ms),
                format!(
                    "p{} latency {:.1} ms",
                    quantile_label(self.latency_quantile),
                    inputs.latency_ms
                ),
            ),
            (
                "errors",
                rate(inputs.error_ratio, |l| l.error_ratio),
                format!("error ratio {:.3} %", inputs.error_ratio * 100.0),
            ),
        ];
        if let Some(r) = inputs.resource_ratio {
            ratings.push((
                "resources",
                rate(r, |l| l.resource_ratio),
                format!("{:.0} % of a resource limit", r * 100.0),
            ));
        }
        let tier = ratings
            .iter()
            .map(|(_, t, _)| *t)
            .max()
            .unwrap_or(Tier::Platinum);
        let reasons = ratings
            .into_iter()
            .filter(|(_, t, _)| *t == tier && tier != Tier::Platinum)
            .map(|(_, t, why)| format!("{why} → {t}"))
            .collect();
        TierVerdict { tier, reasons }
    }
}

/// The value below which `q` of the observations in `buckets` fall,
/// interpolated linearly inside the bucket (`bounds` are the buckets' upper bounds; the
/// last bucket of `buckets` is `+Inf`, whose quantiles are the highest finite bound).
pub fn bucket_quantile(q: f64, bounds: &[f64], buckets: &[u64]) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &count) in buckets.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower) * within);
        }
        below += count;
    }
    bounds.last().copied()
}

/// `0.9` → `90`, `0.99` → `99`, `0.5` → `50`, `0.999` → `99.9`.
pub fn quantile_label(q: f64) -> String {
    let pct = q * 100.0;
    if (pct - pct.round()).abs() < 1e-9 {
        format!("{}", pct.round() as i64)
    } else {
        format!("{pct}")
    }
}

/// What a tier is computed from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierInputs {
    /// Latency at the thresholds' quantile, in milliseconds.
    pub latency_ms: f64,
    /// Failed invocations over all invocations (0..1).
    pub error_ratio: f64,
    /// The higher of CPU and peak memory over their limits; `None` when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_ratio: Option<f64>,
}

/// A tier and why it is not better.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierVerdict {
    /// The tier.
    pub tier: Tier,
    /// The measures that held the plugin at this tier (empty for Platinum).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The tier the gateway derives from live traffic over its rolling window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveTier {
    /// The tier; `None` while the window holds fewer calls than the minimum to rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Why it is not better (empty for Platinum and unrated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Invocations in the window.
    pub calls: u64,
    /// The window, in seconds.
    pub window_seconds: u64,
    /// What the tier was computed from; `None` when unrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<TierInputs>,
    /// RFC 3339 time the tier last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// How one invocation counts toward a plugin's error ratio: the one rule `berth bench`
/// and the gateway's live tiers share (decisions 0060, 0061).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Counted {
    /// A call that went well, or the plugin's own answer to a caller's mistake (its 4xx).
    #[default]
    Good,
    /// A failed call: the plugin failed, answered too late or not at all, or was too busy
    /// or broken to be tried (and, for `berth bench`, an answer that never arrived).
    Error,
    /// Not a call of the plugin at all: the caller's mistake the gateway refused
    /// (`invalid_input`) or a plugin that is stopped (`unavailable`). Left out of the
    /// ratio's denominator.
    NotCounted,
}

/// Outcomes of `berth_invocations_total` that count as failed calls.
pub const ERROR_OUTCOMES: [&str; 6] = [
    "plugin_error",
    "timeout",
    "unreachable",
    "saturated",
    "circuit_open",
    "error",
];
/// Outcomes that count as calls without being failures.
pub const GOOD_OUTCOMES: [&str; 2] = ["success", "client_error"];

/// How an outcome label of `berth_invocations_total` counts (see [`Counted`]): the
/// [`ERROR_OUTCOMES`] are errors, the [`GOOD_OUTCOMES`] good, anything else
/// (`invalid_input`, `unavailable`) not counted.
pub fn outcome_counts(outcome: &str) -> Counted {
    if ERROR_OUTCOMES.contains(&outcome) {
        Counted::Error
    } else if GOOD_OUTCOMES.contains(&outcome) {
        Counted::Good
    } else {
        Counted::NotCounted
    }
}

/// The outcome label the gateway counts a refused or failed invocation as, from the
/// error answer's HTTP status and protocol `code`: 400 and 413 are the caller's input
/// (`invalid_input`); otherwise by code, and `error` for any other.
pub fn invocation_outcome(status: u16, code: &str) -> &'static str {
    if status == 400 || status == 413 {
        return "invalid_input";
    }
    match code {
        "concurrency_limit" => "saturated",
        "circuit_open" => "circuit_open",
        "plugin_disabled" | "plugin_not_ready" | "plugin_not_granted" => "unavailable",
        "deadline_exceeded" => "timeout",
        "plugin_unreachable" => "unreachable",
        "plugin_error" | "plugin_response_too_large" => "plugin_error",
        _ => "error",
    }
}

/// How `berth bench` drove load.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum LoadModel {
    /// A fixed number of callers, each sending its next request when the last one
    /// answered.
    Closed {
        /// Callers.
        concurrency: u32,
    },
    /// Requests sent on a fixed schedule whatever the answers; latency counts from each
    /// request's intended send time.
    Open {
        /// Requests per second.
        rate: f64,
    },
}

/// Latency quantiles, in milliseconds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Highest (for histogram-derived figures: the upper bound of the highest bucket used).
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// The same run as the gateway's own Prometheus series saw it: the deltas of its
/// histograms and counters between a scrape before and one after the run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayView {
    /// Invocations counted.
    pub requests: u64,
    /// Invocations whose outcome was not success, by outcome label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, u64>,
    /// Quantiles interpolated in the buckets of `berth_invocation_duration_seconds`.
    pub latency: Latency,
    /// Mean time the gateway spent on a call besides waiting for the plugin:
    /// `berth_invocation_duration_seconds` minus `berth_invocation_upstream_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_mean_ms: Option<f64>,
}

/// The gateway's own added time, by two independent clocks.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddedTime {
    /// From `berth bench`'s clock: each answer's latency minus the plugin's own time that
    /// the gateway reported in its `Server-Timing` header; mean and median.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_mean_ms: Option<f64>,
    /// Median of the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_p50_ms: Option<f64>,
    /// From the gateway's histograms (see [`GatewayView::added_mean_ms`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_mean_ms: Option<f64>,
}

/// What the plugin used during the run, against its limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceUse {
    /// Mean CPU in cores over the samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores_mean: Option<f64>,
    /// Highest CPU sample, in cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores_peak: Option<f64>,
    /// The CPU limit, in cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_cores: Option<f64>,
    /// Highest memory sample, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
    /// The memory limit, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// Samples taken.
    pub samples: u32,
}

impl ResourceUse {
    /// The higher of peak CPU over its limit and peak memory over its limit.
    pub fn ratio(&self) -> Option<f64> {
        let cpu = self
            .cpu_cores_peak
            .zip(self.cpu_limit_cores)
            .filter(|(_, l)| *l > 0.0)
            .map(|(u, l)| u / l);
        let mem = self
            .memory_peak_bytes
            .zip(self.memory_limit_bytes)
            .filter(|(_, l)| *l > 0)
            .map(|(u, l)| u as f64 / l as f64);
        match (cpu, mem) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One second of the run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelinePoint {
    /// Seconds since the measured part of the run began.
    pub second: u32,
    /// Answers received in this second.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// Median latency of this second's answers.
    pub p50_ms: f64,
    /// 99th percentile of this second's answers.
    pub p99_ms: f64,
}

/// One bar of the latency distribution: answers with latency ≤ `le_ms` and above the
/// previous bar's bound.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyBucket {
    /// Upper bound, in milliseconds.
    pub le_ms: f64,
    /// Answers in this bar.
    pub count: u64,
}

/// One `berth bench` run: what `--output json|yaml` prints, what the store keeps and what
/// the HTML report draws.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    /// The plugin.
    pub plugin: String,
    /// The plugin's version, when the gateway said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Capabilities driven, in the order given.
    pub capabilities: Vec<String>,
    /// The gateway's base URL.
    pub gateway: String,
    /// RFC 3339 time the measured part began.
    pub started_at: String,
    /// Closed or open loop.
    pub load: LoadModel,
    /// Warm-up before measuring, in seconds.
    pub warmup_seconds: f64,
    /// Length of the measured part, in seconds.
    pub duration_seconds: f64,
    /// Answers received in the measured part.
    pub requests: u64,
    /// Answers per second.
    pub throughput: f64,
    /// Error answers by code (the protocol's error code, `http_NNN`, or a transport
    /// failure such as `connect`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, u64>,
    /// Errors over answers (0..1).
    pub error_ratio: f64,
    /// Latency by `berth bench`'s clock.
    pub latency: Latency,
    /// The gateway's view of the same run; `None` when its metrics could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_view: Option<GatewayView>,
    /// The gateway's own added time.
    #[serde(default)]
    pub added: AddedTime,
    /// The plugin's CPU and memory; `None` when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceUse>,
    /// Thresholds applied.
    pub thresholds: TierThresholds,
    /// The tier.
    pub verdict: TierVerdict,
    /// Per-second throughput and latency.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelinePoint>,
    /// The latency distribution.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribution: Vec<LatencyBucket>,
    /// Open loop only: requests that could not be sent on time because the machine could
    /// not keep up (they still count, from their intended time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_sends: Option<u64>,
}

impl BenchReport {
    /// The summary a Plugin's `status.performance` carries.
    pub fn performance(&self) -> crate::plugin::Performance {
        crate::plugin::Performance {
            tier: self.verdict.tier.to_string(),
            p50_ms: self.latency.p50_ms,
            p99_ms: self.latency.p99_ms,
            error_rate: self.error_ratio,
            throughput: Some(self.throughput),
            measured_at: self.started_at.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(latency_ms: f64, error_ratio: f64, resource_ratio: Option<f64>) -> TierInputs {
        TierInputs {
            latency_ms,
            error_ratio,
            resource_ratio,
        }
    }

    #[test]
    fn the_seed_thresholds_rate_each_measure() {
        let t = TierThresholds::default();
        assert!(t.check().is_ok());
        let tier = |l, e, r| t.classify(&inputs(l, e, r)).tier;
        assert_eq!(tier(1.0, 0.0, None), Tier::Platinum);
        assert_eq!(tier(499.9, 0.0009, Some(0.5)), Tier::Platinum);
        assert_eq!(tier(500.0, 0.0, None), Tier::Gold);
        assert_eq!(tier(10.0, 0.001, None), Tier::Gold);
        assert_eq!(tier(10.0, 0.0, Some(0.85)), Tier::Gold);
        assert_eq!(tier(1000.0, 0.0, None), Tier::Silver);
        assert_eq!(tier(10.0, 0.04, None), Tier::Silver);
        assert_eq!(tier(2000.0, 0.0, None), Tier::Bronze);
        assert_eq!(tier(10.0, 0.05, None), Tier::Bronze);
        assert_eq!(tier(10.0, 0.0, Some(0.97)), Tier::Bronze);
    }

    #[test]
    fn the_worst_measure_decides_and_is_named() {
        let t = TierThresholds::default();
        let v = t.classify(&inputs(700.0, 0.02, Some(0.1)));
        assert_eq!(v.tier, Tier::Silver);
        assert_eq!(v.reasons, vec!["error ratio 2.000 % → Silver".to_string()]);
        let v = t.classify(&inputs(3.0, 0.0, None));
        assert!(v.reasons.is_empty());
    }

    #[test]
    fn thresholds_that_contradict_themselves_are_refused_by_field() {
        let mut t = TierThresholds::default();
        t.gold.latency_ms = 100.0;
        assert!(t.check().unwrap_err().starts_with("platinum:"));
        let t = TierThresholds {
            latency_quantile: 1.5,
            ..TierThresholds::default()
        };
        assert!(t.check().unwrap_err().starts_with("latencyQuantile:"));
        let mut t = TierThresholds::default();
        t.silver.error_ratio = f64::NAN;
        assert!(t.check().unwrap_err().starts_with("silver.errorRatio:"));
    }

    #[test]
    fn resource_ratio_is_the_higher_of_cpu_and_memory() {
        let r = ResourceUse {
            cpu_cores_peak: Some(0.25),
            cpu_limit_cores: Some(0.5),
            memory_peak_bytes: Some(30),
            memory_limit_bytes: Some(40),
            ..Default::default()
        };
        assert_eq!(r.ratio(), Some(0.75));
        assert_eq!(ResourceUse::default().ratio(), None);
    }

    #[test]
    fn one_rule_decides_what_counts_as_an_error() {
        assert_eq!(outcome_counts("success"), Counted::Good);
        assert_eq!(outcome_counts("client_error"), Counted::Good);
        assert_eq!(outcome_counts("plugin_error"), Counted::Error);
        assert_eq!(outcome_counts("error"), Counted::Error);
        assert_eq!(outcome_counts("invalid_input"), Counted::NotCounted);
        assert_eq!(outcome_counts("unavailable"), Counted::NotCounted);
        assert_eq!(invocation_outcome(400, "schema_violation"), "invalid_input");
        assert_eq!(
            invocation_outcome(413, "payload_too_large"),
            "invalid_input"
        );
        assert_eq!(invocation_outcome(429, "concurrency_limit"), "saturated");
        assert_eq!(invocation_outcome(503, "plugin_not_ready"), "unavailable");
        assert_eq!(invocation_outcome(504, "deadline_exceeded"), "timeout");
        assert_eq!(invocation_outcome(502, "plugin_unreachable"), "unreachable");
        assert_eq!(invocation_outcome(502, "plugin_error"), "plugin_error");
        assert_eq!(invocation_outcome(500, "http_500"), "error");
    }

    #[test]
    fn tiers_parse_and_order_best_first() {
        assert_eq!("gold".parse::<Tier>().unwrap(), Tier::Gold);
        assert!("tin".parse::<Tier>().is_err());
        assert!(Tier::Platinum < Tier::Bronze);
        assert_eq!(quantile_label(0.9), "90");
        assert_eq!(quantile_label(0.999), "99.9");
    }
}
